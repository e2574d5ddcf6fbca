"""Which network, players, masker and explainer the explanation callbacks use, and running it without side effects.

Both callbacks explain the same kind of thing — a LightningModule's network on a few validation inputs — so the
decisions live here once:

- **the network**: what the module declares as ``explained_network`` (:class:`lit_xai.protocols.ExplainedModel`:
  the classifier, the surrogate, the predictor; for a learned Shapley explainer the surrogate whose game it
  estimates), or any submodule the user names;
- **the players**: the module's declared ``players``, else a patch grid over the image (the ViT's own patches, or
  about 8x8 cells) or one player per tabular column;
- **the masker**: the module's declared ``masker``, else zero filling (:class:`~lit_xai.masking.BaselineFill`), as
  removal-based explanations are defined in Covert, Lundberg & Lee, "Explaining by Removing" (JMLR 2021);
- **the explainer**: ``method="self"`` uses the module's own ``attribute(x, target)`` (a
  :class:`lit_xai.protocols.Explainer`), any other name builds a baseline from :mod:`lit_xai.attribution` on the
  network.

Explaining never changes the run it watches (:func:`explaining`), and :func:`dry_run` explains two validation
inputs in the callbacks' ``setup``, so a configuration that cannot work fails before any training step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn

from lit_xai.attribution import ATTRIBUTIONS, GradCAM, build_attribution
from lit_xai.attribution.base import preserved_model_state, select_target
from lit_xai.attribution.gradients import GradientAttribution
from lit_xai.masking import BaselineFill, Masker, build_masker
from lit_xai.players import Players, players_for
from lit_xai.protocols import ExplainedModel, Explainer

__all__ = [
    "SELF_METHODS",
    "TARGET_FREE_METHODS",
    "Explanation",
    "ExplainSetup",
    "check_target_available",
    "resolve_setup",
    "explaining",
    "explain",
    "dry_run",
    "predict",
]

#: Names that select the LightningModule's own learned explainer (``pl_module.attribute``).
SELF_METHODS = ("self", "learned")
#: Baselines whose maps do not depend on the class, so they need no target.
TARGET_FREE_METHODS = frozenset({"attention_rollout", "last_layer_attention", "random"})


# ----------------------------------------------------------------------------------------------------------------
# Network, players, masker, explainer
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExplainSetup:
    """Everything needed to explain inputs with one method."""

    method: str
    network: nn.Module
    players: Players
    masker: Masker
    attribute: Callable[[Tensor, Tensor], Tensor]
    needs_grad: bool
    needs_target: bool


def _declared(pl_module: L.LightningModule) -> ExplainedModel | None:
    return pl_module if isinstance(pl_module, ExplainedModel) else None


def _resolve_network(pl_module: L.LightningModule, network: str | None) -> nn.Module:
    if network is not None:
        try:
            module = pl_module.get_submodule(network)
        except AttributeError as err:
            raise ValueError(f"{type(pl_module).__name__} has no submodule {network!r}") from err
        return module
    declared = _declared(pl_module)
    if declared is None:
        raise ValueError(
            f"{type(pl_module).__name__} does not say which network to explain: give it the members of "
            f"lit_xai.protocols.ExplainedModel (explained_network, players, masker), or name the network with "
            f"network='<submodule>'"
        )
    return declared.explained_network


def _default_patch_side(side: int) -> int:
    """The smallest patch side that divides ``side`` into at most 8 cells (1 for images of up to 8 pixels)."""
    return next(p for p in range(1, side + 1) if side % p == 0 and side // p <= 8)


def _resolve_players(declared: Players | None, network: nn.Module, x: Tensor, patch_size) -> Players:
    """The module's declared players, else a patch grid over the image (the ViT's patches, or about 8x8 cells) or
    one player per tabular column."""
    players = declared
    if players is None:
        players = players_for(
            x,
            network,
            patch_size=patch_size,
            default_patch_size=lambda size: tuple(_default_patch_side(side) for side in size),
        )
    players.check_input(x)
    return players


def resolve_setup(
    pl_module: L.LightningModule,
    method: str,
    sample: Tensor,
    method_kwargs: Mapping[str, Any] | None = None,
    patch_size: int | list[int] | None = None,
    masker: str | None = None,
    masker_kwargs: Mapping[str, Any] | None = None,
    network: str | None = None,
) -> ExplainSetup:
    """Build the explainer for ``method`` on ``pl_module`` and check it fits inputs like ``sample``."""
    model = _resolve_network(pl_module, network)
    declared = _declared(pl_module)
    # What the module declares (lit_xai.protocols.ExplainedModel) describes its inputs and how its networks see
    # missing players; patch_size is used only when it declares no players.
    own_players = declared.players if declared is not None else None
    own_masker = declared.masker if declared is not None else None
    players = _resolve_players(own_players, model, sample, patch_size)
    if masker is not None:
        removal = build_masker(masker, players, **dict(masker_kwargs or {}))
    else:
        removal = own_masker or BaselineFill(players)
        if removal.num_players != players.num_players:
            removal = BaselineFill(players)
    learned = isinstance(pl_module, Explainer)
    if method == "auto":
        method = "self" if learned else "gradient"
    if method in SELF_METHODS:
        if not learned:
            raise ValueError(
                f"method={method!r} explains with the module's own learned explainer, but "
                f"{type(pl_module).__name__} has no attribute(x, target) method; choose a baseline instead: "
                f"{', '.join(ATTRIBUTIONS)}"
            )
        return ExplainSetup(
            method, model, players, removal, pl_module.attribute, needs_grad=False, needs_target=True
        )
    explainer = build_attribution(method, model, players, masker=removal, **dict(method_kwargs or {}))
    return ExplainSetup(
        method,
        model,
        players,
        removal,
        explainer.attribute,
        needs_grad=isinstance(explainer, (GradientAttribution, GradCAM)),
        needs_target=method not in TARGET_FREE_METHODS,
    )


def check_target_available(
    target: str, batch: Mapping[str, Tensor], setups: list[ExplainSetup], owner: str
) -> None:
    """``target="true"`` needs labels unless every method ignores the class."""
    if target == "true" and "target" not in batch and any(setup.needs_target for setup in setups):
        methods = [setup.method for setup in setups if setup.needs_target]
        raise ValueError(
            f"{owner}(target='true') explains the labelled class, but the validation data has no 'target' and "
            f"{methods} need a class to explain; use target='predicted' (or 'auto') to explain the model's "
            f"prediction"
        )


# ----------------------------------------------------------------------------------------------------------------
# Running an explainer without side effects
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def explaining(pl_module: L.LightningModule) -> Iterator[None]:
    """Evaluation mode, autograd allowed, training's random state untouched; everything restored on exit.

    Validation hooks run under ``torch.inference_mode()``, in which gradient methods cannot work, so it is lifted.
    The random state is isolated so that turning a callback on does not change the run it watches; the modules'
    train/eval modes, ``requires_grad`` flags and batch-norm statistics are restored exactly.
    """
    with isolate_rng(), torch.inference_mode(False), preserved_model_state(pl_module):
        pl_module.eval()
        yield


@dataclass
class Explanation:
    """Attributions of a batch: per-player values for the explained class."""

    attributions: Tensor  # (B, d)
    target: Tensor  # (B,) the class explained


def predict(setup: ExplainSetup, x: Tensor) -> Tensor:
    """The network's class probabilities ``(B, C)`` on the full input (through the masker, so models that take a
    mask, e.g. with the mask appended, are called as they expect)."""
    with torch.no_grad():
        everyone = torch.ones(x.shape[0], setup.players.num_players, dtype=torch.bool, device=x.device)
        return setup.masker(setup.network, x, everyone).float().softmax(-1)


def dry_run(
    pl_module: L.LightningModule,
    setups: list[ExplainSetup],
    batch: Mapping[str, Tensor],
    target: str,
    owner: str,
) -> None:
    """Explain two inputs at setup, so a method or network that cannot work fails before training starts."""
    x = batch["input"][:2]
    labels = batch["target"][:2] if "target" in batch else None
    for setup in setups:
        try:
            with explaining(pl_module):
                probabilities = predict(setup, x.to(pl_module.device))
                if probabilities.dim() != 2:
                    raise ValueError(
                        f"the network returns outputs of shape {tuple(probabilities.shape)}, not class logits "
                        f"(B, C); name the classifier with network='<submodule>'"
                    )
                if "target" in batch and int(batch["target"].max()) >= probabilities.shape[1]:
                    raise ValueError(
                        f"the labels go up to {int(batch['target'].max())} but the network has "
                        f"{probabilities.shape[1]} outputs"
                    )
                explain(setup, x.to(pl_module.device), labels, target, probabilities)
        except Exception as err:  # any failure here is a configuration problem: name the method and the model
            raise ValueError(
                f"{owner}: method {setup.method!r} failed on validation inputs of shape {tuple(x.shape)} with "
                f"{type(setup.network).__name__}: {err}"
            ) from err


def explain(
    setup: ExplainSetup,
    x: Tensor,
    labels: Tensor | None,
    target_mode: str,
    probabilities: Tensor | None = None,
) -> Explanation:
    """Explain ``x`` (call inside :func:`explaining`) for the labelled or the predicted class, per ``target_mode``.

    ``probabilities`` (from :func:`predict`) are only needed to explain the predicted class; they are computed here
    when missing, so callers that have them already save a forward pass.
    """
    if labels is not None and target_mode in ("auto", "true"):
        target = labels.to(x.device).long()
    else:
        target = (predict(setup, x) if probabilities is None else probabilities).argmax(-1)
    with torch.enable_grad() if setup.needs_grad else torch.no_grad():
        values = setup.attribute(x, target)
    if values.dim() == 3:  # an explainer that returned every class
        values = select_target(values, target)
    if values.shape != (x.shape[0], setup.players.num_players):
        raise ValueError(
            f"method {setup.method!r} returned attributions of shape {tuple(values.shape)}; expected "
            f"({x.shape[0]}, {setup.players.num_players}), one value per player"
        )
    return Explanation(values.detach().float(), target)


def explain_every_label(setup: ExplainSetup, x: Tensor, num_classes: int) -> Tensor:
    """Maps of every class ``(B, d, C)`` (call inside :func:`explaining`), for metrics such as soundness that
    score the maps of the classes the network does not predict (Gupta et al., NeurIPS 2022)."""
    maps = [
        explain(setup, x, torch.full((x.shape[0],), c, device=x.device), "true").attributions
        for c in range(num_classes)
    ]
    return torch.stack(maps, dim=-1)
