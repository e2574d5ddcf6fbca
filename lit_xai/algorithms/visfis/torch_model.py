"""Human and model feature importance over players, for explanation supervision (no Lightning).

VisFIS (Ying, Hase & Bansal, *VisFIS: Visual Feature Importance Supervision with Right-for-the-Right-Reason
Objectives*, NeurIPS 2022) supervises which *objects* a VQA model relies on. Here the objects are the players of
:mod:`lit_xai.players` (pixels, patches, tabular columns or column groups), and the human importance of a player
is the fraction of it that a human annotated (the batch's ``annotation``, per pixel or per column, in ``[0, 1]``),
thresholded into important and unimportant players as VisFIS thresholds its human importance scores.

The model's importance is gradient-based and differentiable (``create_graph=True``), so losses on it train the
model: the gradient of the true class with respect to the input, pooled over each player (VisFIS's "gradcam"
importance: ``abs`` = its ``l1``, ``sum`` = its signed ``sum``, ``square`` = its ``l2``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_xai.algorithms.components.saliency import player_saliency
from lit_xai.players import Players
from lit_xai.sampling import UniformSizeSampler

__all__ = [
    "IMPORTANCE_REDUCTIONS",
    "check_annotation",
    "human_importance",
    "invariance_keep",
    "model_importance",
]

IMPORTANCE_REDUCTIONS = ("abs", "sum", "square")


def check_annotation(
    x: Tensor, annotation: Tensor | None, needed_by: str = "VisFIS", check_values: bool = True
) -> Tensor:
    """Validate a batch's human annotation against its input and return it as a float tensor.

    Args:
        x: the input, ``(B, C, H, W)`` or ``(B, F)``.
        annotation: per-pixel ``(B, H, W)`` or per-column ``(B, F)`` importance in ``[0, 1]``.
        needed_by: what needs it, for the error message.
        check_values: also check that the values are finite and in ``[0, 1]`` (a device sync on GPU, so the
            training loop only does it on the first batch of an epoch).
    """
    if annotation is None:
        raise ValueError(
            f"{needed_by} needs human importance: the batches have no 'annotation'. Use a dataset that provides "
            f"one (e.g. lit_xai.data.DecoyDigitsDataModule or ShapesDataModule), or set the weights of the "
            f"supervision terms to 0"
        )
    expected = (x.shape[0], *x.shape[2:]) if x.dim() == 4 else tuple(x.shape)
    if tuple(annotation.shape) != expected:
        raise ValueError(
            f"annotation must have the input's shape without the channel axis, {expected} for an input of shape "
            f"{tuple(x.shape)}; got {tuple(annotation.shape)}. Resize the annotation masks with the images"
        )
    annotation = annotation.to(x.dtype if x.is_floating_point() else torch.float32)
    if check_values and not (
        torch.isfinite(annotation).all() and annotation.min() >= 0 and annotation.max() <= 1
    ):
        raise ValueError("annotation values must be finite and lie in [0, 1] (1 = important to a human)")
    return annotation


def human_importance(annotation: Tensor, players: Players) -> Tensor:
    """Per-player human importance ``(B, d)``: the annotated fraction of each player's pixels or columns."""
    return players.pool(annotation, reduce="mean")


def model_importance(gradient: Tensor, players: Players, reduce: str = "abs") -> Tensor:
    """Per-player model importance ``(B, d)`` from an input gradient (differentiable if the gradient is).

    Args:
        gradient: gradient of the true class with respect to the input, the input's shape.
        players: the players.
        reduce: ``"abs"`` (sum of ``|g|`` over a player), ``"sum"`` (signed sum) or ``"square"`` (sum of ``g²``).
    """
    if reduce == "abs":
        return player_saliency(gradient, players)
    if reduce == "sum":
        return player_saliency(gradient, players, signed=True)
    if reduce == "square":
        return player_saliency(gradient.square(), players, signed=True)
    raise ValueError(f"importance reduce must be one of {IMPORTANCE_REDUCTIONS}, got {reduce!r}")


def invariance_keep(important: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keep-mask for output invariance: every important player plus a random subset of the unimportant ones.

    The kept subset has a uniformly distributed size (as VisFIS draws it), so the model sees anything from all to
    none of the unimportant players removed.

    Args:
        important: ``(B, d)`` bool, the human-important players.
        generator: optional generator for the random subsets.
    """
    sampled = UniformSizeSampler(important.shape[1]).sample(
        important.shape[0], generator=generator, device=important.device
    )
    return important | sampled.to(important.device)
