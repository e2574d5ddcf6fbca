"""Errors of estimated attributions against ground-truth Shapley values.

Used to check amortized explainers (ViT Shapley, Covert, Kim & Lee, ICLR 2023; FastSHAP, Jethani et al., ICLR 2022)
and sampling estimators (KernelSHAP) against exact or converged Shapley values (:mod:`lit_xai.shapley`). Every
score is per image, so the differences between methods can be given confidence intervals.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_xai.metrics.functional._utils import check_finite, pearson, spearman

__all__ = ["shapley_error", "resolve_top_k"]


def resolve_top_k(top_k: int | None, num_players: int) -> int:
    """``None`` -> 10% of the players (at least one); an int must lie in ``1..d``."""
    if top_k is None:
        return max(1, math.ceil(0.1 * num_players))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_players:
        raise ValueError(
            f"top_k must be an int in 1..{num_players} (the number of players) or None, got {top_k!r}"
        )
    return top_k


def shapley_error(
    attributions: Tensor, shapley_values: Tensor, top_k: int | None = None
) -> dict[str, Tensor]:
    """Per-image agreement between estimated attributions and ground-truth Shapley values.

    Args:
        attributions: ``(B, d)`` estimates for the target class.
        shapley_values: ``(B, d)`` ground truth for the same class.
        top_k: how many top players the overlap compares; ``None`` uses 10% of the players (at least one).

    Returns:
        A dict of ``(B,)`` tensors:

        - ``squared_error``: ``sum_i (a_i - phi_i)^2`` (squared L2 distance, summed over players);
        - ``pearson``: Pearson correlation between ``a`` and ``phi`` (0 where either is constant);
        - ``spearman``: Spearman rank correlation (ties share their average rank);
        - ``sign_agreement``: fraction of players where ``sign(a_i) == sign(phi_i)`` (zero only matches zero);
        - ``top_k_overlap``: fraction of the ``k`` players with the largest true values that are also among the
          ``k`` largest estimates (ties are resolved by ``torch.topk``'s order).
    """
    for name, value in (("attributions", attributions), ("shapley_values", shapley_values)):
        if not isinstance(value, Tensor) or value.dim() != 2:
            raise ValueError(
                f"{name} must be a tensor of shape (B, d), got {getattr(value, 'shape', type(value))}"
            )
    if attributions.shape != shapley_values.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and shapley_values {tuple(shapley_values.shape)} must have the "
            f"same shape (B, d): explain the same images, class and players"
        )
    estimate = attributions.detach().float()
    truth = shapley_values.detach().to(device=estimate.device, dtype=estimate.dtype)
    check_finite(estimate, "attributions")
    check_finite(truth, "shapley_values", source="the ground truth")
    k = resolve_top_k(top_k, truth.shape[1])

    predicted_top = torch.zeros_like(estimate, dtype=torch.bool)
    predicted_top.scatter_(1, estimate.topk(k, dim=1).indices, True)
    true_top = truth.topk(k, dim=1).indices
    return {
        "squared_error": (estimate - truth).square().sum(dim=1),
        "pearson": pearson(estimate, truth),
        "spearman": spearman(estimate, truth),
        "sign_agreement": (estimate.sign() == truth.sign()).float().mean(dim=1),
        "top_k_overlap": predicted_top.gather(1, true_top).float().mean(dim=1),
    }
