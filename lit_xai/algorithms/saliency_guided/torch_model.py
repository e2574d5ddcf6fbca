"""The model-side pieces of saliency-guided training (no Lightning).

Ismail, Corrada Bravo & Feizi, *Improving Deep Learning Interpretability by Saliency Guided Training*,
NeurIPS 2021. Each step computes the gradient saliency of the true class with respect to the input, masks the
``k`` lowest-saliency features, and asks the model to predict the same distribution on the masked input.

Features are *players* (:mod:`lit_xai.players`): pixels (``PatchGrid(image_size, 1)``, the paper's setting; all
channels of a pixel go together, as the paper does for colour images), patches, or tabular columns. Masked players
are realised by a masker (:mod:`lit_xai.masking`): the paper's "uniform random values within the sample's range"
is :class:`~lit_xai.masking.RandomRangeFill`, a :class:`~lit_xai.masking.BaselineFill` whose baseline is drawn
afresh per call; a constant or any other fill is a plain ``BaselineFill``, and ViTs can drop the tokens instead
(:func:`lit_xai.algorithms.components.saliency.build_saliency_masker`). The input gradient is
:func:`lit_xai.attribution.gradients.input_gradient`, which VisFIS and RRR use too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_fraction", "lowest_saliency_keep", "num_masked"]


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
