"""How close is an amortized explainer to the Shapley values it estimates, and what would KernelSHAP need?

Used by ``make demo`` and ``benchmarks/vit_shapley.py``: the explainer's error against ground-truth Shapley values
of its surrogate game (:mod:`lit_xai.ground_truth`: exact enumeration for up to 16 players, converged KernelSHAP
beyond), KernelSHAP's error as its budget of evaluations grows, and the budget at which KernelSHAP first matches
the explainer (the comparison of Covert, Kim & Lee, ICLR 2023, Fig. 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_xai.algorithms.vit_shapley.torch_model import AmortizedShapley
from lit_xai.ground_truth import KERNEL_MAX_EVALUATIONS, KERNEL_THRESHOLD, shapley_ground_truth
from lit_xai.metrics.functional import shapley_error
from lit_xai.shapley import ModelGame, kernel_shap

__all__ = [
    "ExplainerComparison",
    "ground_truth_shapley",
    "kernel_shap_estimates",
    "compare_with_kernel_shap",
]


@dataclass
class ExplainerComparison:
    """Errors of the explainer and of KernelSHAP against the same ground truth (means over images)."""

    explainer: dict[str, float]
    kernel_shap: dict[int, dict[str, float]] = field(default_factory=dict)
    matching_budget: int | None = None
    explainer_seconds_per_image: float = float("nan")


def _game(net: AmortizedShapley, x: Tensor, target: Tensor, batch_size: int) -> ModelGame:
    return ModelGame(net.surrogate, net.masker, x, link=net.link, batch_size=batch_size, target=target)


def ground_truth_shapley(
    net: AmortizedShapley,
    x: Tensor,
    target: Tensor,
    batch_size: int = 4096,
    kernel_evaluations: int = KERNEL_MAX_EVALUATIONS,
    threshold: float = KERNEL_THRESHOLD,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shapley values ``(B, d)`` of the surrogate's game for ``target``, by the toolkit's one rule
    (:func:`lit_xai.ground_truth.shapley_ground_truth`: exact for few players, converged KernelSHAP beyond)."""
    return shapley_ground_truth(
        net.surrogate,
        net.masker,
        x,
        target,
        link=net.link,
        model_batch_size=batch_size,
        threshold=threshold,
        max_evaluations=kernel_evaluations,
        kernel_batch_size=batch_size,
        generator=generator,
    )


def _mean_errors(estimate: Tensor, truth: Tensor) -> dict[str, float]:
    return {name: float(values.float().mean()) for name, values in shapley_error(estimate, truth).items()}


def kernel_shap_estimates(
    net: AmortizedShapley,
    x: Tensor,
    target: Tensor,
    budgets: list[int],
    batch_size: int = 512,
    seed: int = 0,
) -> dict[int, Tensor]:
    """KernelSHAP's estimates ``(B, d)`` after each budget of evaluations per image (one run up to the largest
    budget, its estimates recorded along the way). Budgets too small to identify every player are left out.

    Independent of the explainer, so a caller can compute (and cache) them while the explainer still trains.
    """
    game = _game(net, x, target, batch_size)
    # Steps sized so that the first estimate lands exactly on the smallest budget (v(∅) and v(all) included).
    step = max(2, (min(budgets) - 2) // 2 * 2)
    result = kernel_shap(
        game,
        net.num_players,
        threshold=None,
        max_evaluations=max(budgets),
        batch_size=step,
        return_trajectory=True,
        generator=torch.Generator().manual_seed(seed),
    )
    estimates = {}
    for budget in budgets:
        reached = [values for evaluations, values in result.trajectory if evaluations <= budget]
        if reached:
            estimates[budget] = reached[-1].squeeze(-1).float()
    return estimates


def compare_with_kernel_shap(
    net: AmortizedShapley,
    x: Tensor,
    target: Tensor,
    truth: Tensor,
    budgets: list[int],
    batch_size: int = 512,
    seed: int = 0,
    kernel_estimates: dict[int, Tensor] | None = None,
) -> ExplainerComparison:
    """Errors of the explainer and of KernelSHAP at each budget (evaluations per image) against ``truth``.

    KernelSHAP's estimates come from :func:`kernel_shap_estimates` (or ``kernel_estimates``, computed earlier by
    it); the matching budget is the smallest budget whose mean squared error is at most the explainer's.
    """
    start = time.perf_counter()
    estimate = net.attribute(x, target)
    seconds = (time.perf_counter() - start) / x.shape[0]
    comparison = ExplainerComparison(_mean_errors(estimate, truth), explainer_seconds_per_image=seconds)
    if kernel_estimates is None:
        kernel_estimates = kernel_shap_estimates(net, x, target, budgets, batch_size, seed)
    for budget in budgets:
        if budget in kernel_estimates:
            comparison.kernel_shap[budget] = _mean_errors(kernel_estimates[budget].to(truth.device), truth)
    for budget, errors in sorted(comparison.kernel_shap.items()):
        if errors["squared_error"] <= comparison.explainer["squared_error"]:
            comparison.matching_budget = budget
            break
    return comparison
