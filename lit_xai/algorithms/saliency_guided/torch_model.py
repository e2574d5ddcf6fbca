"""The model-side pieces of saliency-guided training (no Lightning).

Ismail, Corrada Bravo & Feizi, *Improving Deep Learning Interpretability by Saliency Guided Training*,
NeurIPS 2021. Each step computes the gradient saliency of the true class with respect to the input, masks the
``k`` lowest-saliency features, and asks the model to predict the same distribution on the masked input.

Features are *players* (:mod:`lit_xai.players`): pixels (``PatchGrid(image_size, 1)``, the paper's setting; all
channels of a pixel go together, as the paper does for colour images), patches, or tabular columns. Masked players
are realised by a masker (:mod:`lit_xai.masking`): the paper's "uniform random values within the sample's range"
is :class:`RandomRangeFill`, a :class:`~lit_xai.masking.BaselineFill` whose baseline is drawn afresh per call;
a constant or any other fill is a plain ``BaselineFill``, and ViTs can drop the tokens instead.

The same gradient helper serves VisFIS and RRR, which need it differentiable (``create_graph=True``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import BaselineFill, Masker, build_masker
from lit_xai.players import FeatureGroups, PatchGrid, Players

__all__ = [
    "RandomRangeFill",
    "build_saliency_masker",
    "check_fraction",
    "eval_mode",
    "input_gradient",
    "lowest_saliency_keep",
    "num_masked",
    "output_gradient",
    "player_saliency",
    "players_for_input",
]


def players_for_input(
    x: Tensor, patch_size: int | Sequence[int] | None = None, groups: Sequence[Sequence[int]] | None = None
) -> Players:
    """The players of an input batch: pixels or patches of images ``(B, C, H, W)``, columns of tables ``(B, F)``.

    Args:
        x: an example batch.
        patch_size: for images, the side of a player in pixels (``None``: one pixel per player).
        groups: for tables, optional column groups (one list of column indices per player).
    """
    if x.dim() == 4:
        return PatchGrid(tuple(x.shape[-2:]), patch_size or 1)
    if x.dim() == 2:
        return FeatureGroups(x.shape[1], groups)
    raise ValueError(
        f"expected images (B, C, H, W) or tabular rows (B, F), got an input of shape {tuple(x.shape)}"
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Temporarily put ``model`` in eval mode (dropout off, BatchNorm on running statistics), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def output_gradient(
    logits: Tensor,
    x: Tensor,
    target: Tensor | None = None,
    log_probs: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of ``logits`` (computed from ``x``, which must require grad) with respect to ``x``.

    Rows are independent (each sample's output depends only on its own input), so differentiating the batch sum
    gives every sample's gradient at once.

    Args:
        logits: ``(B, K)`` outputs of a forward pass on ``x``.
        x: the input of that forward pass.
        target: ``(B,)`` classes whose output is differentiated; ``None`` differentiates the sum over all classes
            (with ``log_probs=True`` that is RRR's ``∂/∂x Σ_k log p_k``).
        log_probs: differentiate log-probabilities instead of logits.
        create_graph: keep the graph of the gradient, so a loss on it can be backpropagated to the parameters
            (double backpropagation, as VisFIS and RRR need); the forward graph is then kept too, so ``logits``
            can still be used in a loss.
    """
    if not x.requires_grad:
        raise ValueError("x must require grad: call x.requires_grad_(True) before the forward pass")
    out = logits.log_softmax(-1) if log_probs else logits
    selected = out.sum() if target is None else out.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph, retain_graph=create_graph)
    return grad


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    log_probs: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of ``model``'s output with respect to its input (see :func:`output_gradient` for the options).

    ``x`` itself is not modified; with ``create_graph=True`` the gradient is differentiable in the parameters.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return output_gradient(model(x), x, target, log_probs=log_probs, create_graph=create_graph)


def player_saliency(gradient: Tensor, players: Players, signed: bool = False) -> Tensor:
    """Per-player saliency ``(B, d)`` from an input gradient: ``|∂f/∂x|`` (or the signed gradient) summed over
    each player's pixels and channels (or columns)."""
    values = gradient if signed else gradient.abs()
    return players.pool(values, reduce="sum")


def check_fraction(fraction: float, name: str = "mask_fraction") -> float:
    """Raise a ``ValueError`` unless ``0 < fraction < 1``."""
    if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
        raise ValueError(
            f"{name} must be strictly between 0 and 1 (a share of the features, e.g. 0.5), got {fraction!r}"
        )
    return float(fraction)


def num_masked(fraction: float, num_players: int) -> int:
    """How many of ``num_players`` the share ``fraction`` masks: ``floor(fraction * d)``, as the paper counts."""
    count = math.floor(check_fraction(fraction) * num_players + 1e-9)
    if count < 1:
        raise ValueError(
            f"mask_fraction={fraction} of {num_players} players masks none of them; raise mask_fraction "
            f"to at least {1 / num_players:.3g} or use smaller players"
        )
    return count


def lowest_saliency_keep(saliency: Tensor, fraction: float) -> Tensor:
    """Keep-mask ``(B, d)`` that removes exactly ``floor(fraction * d)`` lowest-saliency players per row.

    Ties are broken by ``torch.topk``, so the count is exact even when many saliencies are equal (e.g. zero).
    """
    count = num_masked(fraction, saliency.shape[1])
    lowest = saliency.topk(count, dim=1, largest=False).indices
    keep = torch.ones_like(saliency, dtype=torch.bool)
    return keep.scatter(1, lowest, False)


class RandomRangeFill(BaselineFill):
    """Missing values become uniform random numbers within each sample's own ``[min, max]`` (the paper's fill).

    A fresh draw per call, from ``generator`` if given (else the global RNG, seeded by ``seed_everything``).
    """

    def __init__(self, players: Players, generator: torch.Generator | None = None) -> None:
        super().__init__(players, fill=0.0, generator=generator)
        self.constant_null = False

    def baseline(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.dim()))
        low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        device = self.generator.device if self.generator is not None else x.device
        u = torch.rand(x.shape, generator=self.generator, device=device).to(x)
        return low + (high - low) * u


def build_saliency_masker(
    players: Players, masker: str = "baseline", fill: str | float = "random", **masker_kwargs
) -> Masker:
    """The masker that realises removed players.

    Args:
        players: the players.
        masker: ``"baseline"`` (fill the removed players) or another name of :func:`lit_xai.masking.build_masker`
            (``"token_drop"``/``"attention_mask"`` drop a ViT's removed patches instead).
        fill: for ``"baseline"``: ``"random"`` (uniform within the sample's range, the paper), a number, or any
            :class:`~lit_xai.masking.BaselineFill` fill (``"zeros"``, ``"mean"``, ``"blur"``, ``"noise"``).
        masker_kwargs: extra arguments of the masker (e.g. ``mean`` for ``fill="mean"``).
    """
    if masker == "baseline":
        if fill == "random":
            return RandomRangeFill(players, **masker_kwargs)
        return BaselineFill(players, fill=fill, **masker_kwargs)
    return build_masker(masker, players, **masker_kwargs)
