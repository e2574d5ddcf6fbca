"""Ground-truth Shapley values of a model's game, and the one rule that decides how they are computed.

``ExplanationQuality`` (``shapley_error``), ``evaluate.py`` (``ground_truth``) and the ViT Shapley comparison of
``make demo`` and ``benchmarks/vit_shapley.py`` all score explanations against these values. Each used to decide on
its own between exact enumeration and KernelSHAP (exact up to 20 players in two places, exact up to 16 or nothing in
the third), so the same model could be scored against different truths. ``estimator="auto"`` is decided here, once:
exact enumeration up to :data:`AUTO_EXACT_PLAYERS` players (2^16 = 65,536 evaluations per input), KernelSHAP run to
convergence beyond.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.shapley import MAX_EXACT_PLAYERS, ModelGame, exact_shapley, kernel_shap

__all__ = [
    "AUTO_EXACT_PLAYERS",
    "ESTIMATORS",
    "KERNEL_MAX_EVALUATIONS",
    "KERNEL_THRESHOLD",
    "resolve_estimator",
    "shapley_ground_truth",
]

#: ``auto`` enumerates every coalition up to this many players; 2^20 (the most :func:`exact_shapley` takes) would
#: cost a million evaluations per input, where a converged KernelSHAP is as accurate for far less.
AUTO_EXACT_PLAYERS = 16
ESTIMATORS = ("auto", "exact", "kernel")
#: KernelSHAP as ground truth: run until the estimated standard deviation is below 0.5 % of the values' range.
KERNEL_THRESHOLD = 0.005
KERNEL_MAX_EVALUATIONS = 100_000


def resolve_estimator(estimator: str, num_players: int) -> Literal["exact", "kernel"]:
    """``auto`` -> ``exact`` for at most :data:`AUTO_EXACT_PLAYERS` players, else ``kernel``.

    Raises:
        ValueError: an unknown estimator, or ``exact`` beyond the players :func:`exact_shapley` can enumerate.

    Example:
        >>> resolve_estimator("auto", 16), resolve_estimator("auto", 64)
        ('exact', 'kernel')
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "auto":
        return "exact" if num_players <= AUTO_EXACT_PLAYERS else "kernel"
    if estimator == "exact" and num_players > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact Shapley values enumerate 2^{num_players} coalitions per input; use 'kernel' (converged "
            f"KernelSHAP) or 'auto' for more than {MAX_EXACT_PLAYERS} players"
        )
    return estimator


def shapley_ground_truth(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    target: Tensor,
    estimator: str = "auto",
    link: str | Callable[[Tensor], Tensor] = "softmax",
    model_batch_size: int = 4096,
    threshold: float | None = KERNEL_THRESHOLD,
    max_evaluations: int = KERNEL_MAX_EVALUATIONS,
    kernel_batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shapley values ``(B, d)`` of ``model``'s game on ``x`` for the classes ``target`` (float32).

    Args:
        model: the network whose game is explained.
        masker: how missing players are realised (its players give ``d``).
        x: inputs ``(B, ...)``.
        target: the class of each input, ``(B,)``.
        estimator: ``"auto"``, ``"exact"`` or ``"kernel"`` (see :func:`resolve_estimator`).
        link: the game's scale (``"softmax"`` probabilities, ``"log_softmax"``, ``"logits"`` or a callable).
        model_batch_size: masked inputs per forward pass.
        threshold: KernelSHAP stops once its estimated standard deviation is below this share of the values' range.
        max_evaluations: KernelSHAP's cap on coalitions per input.
        kernel_batch_size: coalitions KernelSHAP draws per step.
        generator: KernelSHAP's random stream (seed it for reproducible ground truth).

    Example:
        >>> from lit_xai.masking import build_masker
        >>> from lit_xai.players import FeatureGroups
        >>> linear = nn.Linear(3, 2, bias=False).eval()
        >>> masker = build_masker("baseline", FeatureGroups(3))
        >>> phi = shapley_ground_truth(linear, masker, torch.ones(1, 3), torch.tensor([0]), link="logits")
        >>> torch.allclose(phi, linear.weight[0] * 1.0, atol=1e-6)  # a linear model's values are w * (x - 0)
        True
    """
    d = masker.num_players
    game = ModelGame(model, masker, x, link=link, batch_size=model_batch_size, target=target)
    if resolve_estimator(estimator, d) == "exact":
        return exact_shapley(game, d)[..., 0].float()
    result = kernel_shap(
        game,
        d,
        threshold=threshold,
        max_evaluations=max_evaluations,
        batch_size=kernel_batch_size,
        generator=generator,
    )
    return result.values[..., 0].float()
