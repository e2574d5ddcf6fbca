"""Beta Shapley values as an attribution baseline (Kwon & Zou, "Beta Shapley: a Unified and Noise-reduced Data
Valuation Framework for Machine Learning", AISTATS 2022).

A semivalue that weighs a player's marginal contributions by coalition size with a Beta distribution:
``q_s ∝ C(d-1, s) B(s + β, d-1-s + α)`` (:func:`lit_xai.semivalues.beta_size_weights`). ``(α, β) = (1, 1)`` is
the Shapley value; ``α > β`` (e.g. the paper's ``(16, 1)``) emphasises small coalitions, where a feature's own
signal shows, ``β > α`` large ones. Estimated from the same antithetic permutations as
:class:`~lit_xai.attribution.permutation_shap.PermutationSHAP`; Beta Shapley values are not efficient.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lit_xai.attribution.permutation_shap import PermutationSHAP
from lit_xai.players import Players
from lit_xai.semivalues import PermutationResult, beta_size_weights

__all__ = ["BetaShapley"]


class BetaShapley(PermutationSHAP):
    """Beta Shapley values ``(B, d)`` from antithetic permutation sampling.

    Args:
        alpha: the paper's ``α`` (weight on small coalitions grows with it).
        beta: the paper's ``β`` (weight on large coalitions grows with it).
        Other arguments are those of :class:`~lit_xai.attribution.permutation_shap.PermutationSHAP`.
    """

    name = "beta_shapley"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        alpha: float = 16.0,
        beta: float = 1.0,
        max_evaluations: int = 2048,
        antithetic: bool = True,
        seed: int | None = 0,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 512,
        permutations_per_step: int = 32,
    ) -> None:
        super().__init__(
            model, players, masker, max_evaluations, antithetic, seed, link, batch_size, permutations_per_step
        )
        self.size_weights = beta_size_weights(players.num_players, alpha, beta)  # checks alpha, beta > 0
        self.alpha, self.beta = float(alpha), float(beta)

    def _values(self, result: PermutationResult) -> Tensor:
        return result.semivalue(self.size_weights)
