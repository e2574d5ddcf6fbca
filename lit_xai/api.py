"""The notebook API: explain a batch with any method and score it with any metric in a few lines.

:func:`explain` and :func:`score` (also reachable as ``lit_xai.explain`` and ``lit_xai.score``) take any PyTorch
classifier, or any module that declares what it explains (:class:`lit_xai.protocols.ExplainedModel`: our
classifier, surrogate and explainer modules, or a module of your own). They add nothing of their own to the
toolkit: methods come from the attribution registry (:func:`lit_xai.attribution.build_attribution`), metrics from the
metric registry (:mod:`lit_xai.metrics.registry`, the same defaults as ``evaluate.py`` and the callbacks), players
and removal from the rules the training stages use (:mod:`lit_xai.algorithms.vit_shapley.removal`), and ground-truth
Shapley values from :func:`lit_xai.ground_truth.shapley_ground_truth`. What these functions decide is only what a
notebook should not have to spell out: the players of a plain network (a ViT's own patches, else a grid of
:data:`DEFAULT_GRID` by :data:`DEFAULT_GRID` cells, or one player per column), and the explained class (the predicted
one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.players import Players, as_player_values, players_for
from lit_xai.protocols import ExplainedModel, Explainer

__all__ = ["DEFAULT_GRID", "Explanation", "explain", "score"]

#: Patches per side of the players of a plain CNN's images (when the image side allows it, else half as many).
DEFAULT_GRID = 8


@dataclass
class Explanation:
    """What :func:`explain` returns: the values and everything needed to score or draw them.

    Attributes:
        values: ``(B, d)`` one value per player, for the class ``target`` of each input.
        target: ``(B,)`` the explained classes.
        players: the players the values belong to.
        masker: how the explained network sees missing players (the removal :func:`score` uses).
        method: the method's name.
    """

    values: Tensor
    target: Tensor
    players: Players
    masker: Masker
    method: str

    def maps(self) -> Tensor:
        """The values spread over the input's layout: ``(B, H, W)`` pixel maps for images, ``(B, F)`` for columns."""
        return self.players.upsample(self.values)


def _network(model: nn.Module) -> nn.Module:
    return model.explained_network if isinstance(model, ExplainedModel) else model


def _default_grid_patch(image_size: tuple[int, int]) -> int:
    """A square patch that cuts the shorter side into ``DEFAULT_GRID`` (else ``DEFAULT_GRID // 2``) cells."""
    side = min(image_size)
    grid = next((g for g in (DEFAULT_GRID, DEFAULT_GRID // 2) if side % g == 0), None)
    if grid is None:
        raise ValueError(
            f"images of {tuple(image_size)} pixels: give patch_size (a divisor of both sides) to set the players"
        )
    return side // grid


def _removal(
    model: nn.Module, x: Tensor, players: Players | None, masker: Masker | str, patch_size: int | None
) -> tuple[nn.Module, Players, Masker]:
    """The network to explain, its players and its masker: given ones first, then the module's, then defaults."""
    from lit_xai.algorithms.vit_shapley.removal import build_stage_masker

    network = _network(model)
    declared = isinstance(model, ExplainedModel)
    if isinstance(masker, Masker):
        return network, masker.players, masker
    if players is None and declared and model.players is not None and patch_size is None:
        players = model.players
    if players is None:
        players = players_for(x, network, patch_size=patch_size, default_patch_size=_default_grid_patch)
    if masker == "auto" and declared and model.masker is not None and model.masker.players is players:
        return network, players, model.masker
    return network, players, build_stage_masker(network, players, masker)


def _predicted(network: nn.Module, masker: Masker, x: Tensor) -> Tensor:
    everyone = torch.ones(x.shape[0], masker.num_players, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        return masker(network, x, everyone).argmax(-1)


def _targets(target: Tensor | int | None, network: nn.Module, masker: Masker, x: Tensor) -> Tensor:
    if target is None:
        return _predicted(network, masker, x)
    return torch.as_tensor(target, device=x.device).long().expand(x.shape[0]).clone()


def explain(
    model: nn.Module,
    x: Tensor,
    method: str | Callable | None = "integrated_gradients",
    target: Tensor | int | None = None,
    *,
    players: Players | None = None,
    masker: Masker | str = "auto",
    patch_size: int | None = None,
    **options,
) -> Explanation:
    """Explain a batch with one method.

    Args:
        model: any classifier (``x -> logits``), or a module declaring what it explains
            (:class:`~lit_xai.protocols.ExplainedModel`): its network, players and masker are used.
        x: the inputs, ``(B, C, H, W)`` images or ``(B, F)`` rows.
        method: a name of :data:`lit_xai.attribution.ATTRIBUTIONS`; a function ``f(network, x, target)`` returning
            per-player values or a map in the input's layout (pooled onto the players); or ``None`` for a learned
            explainer module's own ``attribute``.
        target: the classes to explain (one per input, or one for all); ``None``: the predicted class.
        players: the players (default: the module's; a ViT's patches; a grid of ``DEFAULT_GRID`` cells per side;
            one per column).
        masker: a :class:`~lit_xai.masking.Masker` or a masker name; ``"auto"``: the module's, else tokens dropped
            for ViTs and zeros filled in otherwise (what the training stages do).
        patch_size: the players' patch size in pixels (instead of the default grid).
        **options: the method's options (e.g. ``steps=32`` for integrated gradients, ``num_samples`` for KernelSHAP).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import lit_xai
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
        >>> x = torch.randn(4, 1, 8, 8)
        >>> e = lit_xai.explain(model, x, method="gradient_x_input")
        >>> e.values.shape, e.players, e.target.shape, e.maps().shape
        (torch.Size([4, 64]), PatchGrid(image_size=(8, 8), patch_size=(1, 1)), torch.Size([4]), torch.Size([4, 8, 8]))
        >>> lit_xai.explain(model, x, method="kernel_shap", target=2, patch_size=4).values.shape  # 2 x 2 players
        torch.Size([4, 4])
    """
    network, players, masker = _removal(model, x, players, masker, patch_size)
    target = _targets(target, network, masker, x)
    if method is None:
        if not isinstance(model, Explainer):
            raise ValueError(
                f"method=None explains with the module's own attribute(); {type(model).__name__} has none"
            )
        values, name = model.attribute(x, target), getattr(type(model), "__name__", "explainer")
    elif callable(method):
        with torch.enable_grad():
            raw = method(network, x, target)
        name = getattr(method, "__name__", "own method")
        values = as_player_values(raw, x, players, f"method {name!r}")
    else:
        from lit_xai.attribution import build_attribution

        explainer = build_attribution(method, network, players, masker=masker, **options)
        values, name = explainer.attribute(x, target), method
    return Explanation(values.detach().float(), target, players, masker, name)


def score(
    model: nn.Module,
    x: Tensor,
    explanation: Explanation | Tensor,
    metric: str | Sequence[str] = "insertion_deletion",
    target: Tensor | int | None = None,
    *,
    players: Players | None = None,
    masker: Masker | str | None = None,
    annotation: Tensor | None = None,
    confidence: float = 0.95,
    **options,
) -> dict[str, dict[str, float]]:
    """Score explanations of a batch with one or more metrics of :data:`lit_xai.metrics.registry.METRICS`.

    Args:
        model: the network (or module) whose removal scores the explanation, as in :func:`explain`.
        x: the explained inputs.
        explanation: what :func:`explain` returned (its players, masker and classes are used), or ``(B, d)`` values.
        metric: ``insertion_deletion``, ``sensitivity_n``, ``eraser``, ``localization`` (needs ``annotation``) or
            ``shapley_error`` (against ground-truth Shapley values of the game, computed here by the one "auto" rule
            of :func:`~lit_xai.ground_truth.shapley_ground_truth`: exact up to 16 players, i.e. 65,536 passes per
            input, so choose few players for it); or several.
        target: the explained classes, for plain values (default: the predicted class).
        players: the players of plain values (default as in :func:`explain`).
        masker: the removal (default: the explanation's, else as in :func:`explain`).
        annotation: ``(B, H, W)`` ground-truth masks for ``localization``.
        confidence: the level of the intervals.
        **options: the metrics' options, over the registry's defaults (e.g. ``num_steps=8``).

    Returns:
        ``{score: {"mean", "std", "half_width", "low", "high", "count"}}`` over the batch.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import lit_xai
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
        >>> x = torch.randn(4, 1, 8, 8)
        >>> e = lit_xai.explain(model, x, method="integrated_gradients", patch_size=2)
        >>> scores = lit_xai.score(model, x, e, metric=["insertion_deletion", "shapley_error"])
        >>> sorted(scores)
        ['deletion_auc', 'insertion_auc', 'pearson', 'sign_agreement', 'spearman', 'squared_error', 'top_k_overlap']
        >>> 0.0 <= scores["insertion_auc"]["mean"] <= 1.0, scores["insertion_auc"]["count"]
        (True, 4.0)
    """
    from lit_xai.ground_truth import shapley_ground_truth
    from lit_xai.metrics.registry import METRICS, build_metric

    if isinstance(explanation, Explanation):
        values = explanation.values
        if masker is None and players is None:
            masker = explanation.masker
        players = explanation.players if players is None else players
        target = explanation.target if target is None else target
    else:
        values = explanation
    network, players, masker = _removal(model, x, players, masker or "auto", None)
    target = _targets(target, network, masker, x)
    names = [metric] if isinstance(metric, str) else list(metric)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    unused = [key for key in options if not any(_accepts(name, key) for name in names)]
    if unused:
        raise ValueError(f"option {unused[0]!r} is not an option of {', '.join(names)}")
    results: dict[str, dict[str, float]] = {}
    for name in names:
        needs = METRICS[name].needs
        accepted = {key: value for key, value in options.items() if _accepts(name, key)}
        scorer = build_metric(
            name, masker=masker if needs == "masker" else None, players=players, options=accepted
        )
        if needs == "masker":
            scorer.update(network, x, values, target)
        elif needs == "players":
            if annotation is None:
                raise ValueError("metric 'localization' compares with ground-truth masks: give annotation=")
            scorer.update(values, annotation)
        else:
            scorer.update(values, shapley_ground_truth(network, masker, x, target))
        results.update(scorer.summary(confidence))
    return results


def _accepts(metric: str, option: str) -> bool:
    """Whether ``metric``'s class takes ``option``, so one ``**options`` can serve several metrics."""
    import inspect

    from lit_xai.metrics.registry import METRICS

    return option in inspect.signature(METRICS[metric].cls.__init__).parameters
