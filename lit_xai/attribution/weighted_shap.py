"""WeightedSHAP as an attribution baseline (Kwon & Zou, "WeightedSHAP: analyzing and improving Shapley based
feature attributions", NeurIPS 2022).

Antithetic permutation sampling gives every player's marginal contributions by coalition size (as
:class:`~lit_xai.attribution.permutation_shap.PermutationSHAP` does); from them the 13 candidate semivalues
(LOO-first, Beta(32, 1) ... Beta(1, 32), LOO-last) are formed, and per input and class the one with the smallest
prediction-recovery error on the same game (through the masker: the surrogate's game in ``evaluate.py``) is
returned (:func:`lit_xai.weighted_shap.weighted_shap`). It is the Shapley value unless another candidate recovers
the prediction strictly better. Cost: the permutations' ``max_evaluations`` plus at most ``13 (d + 1)`` distinct
coalitions per input and class for the recovery curves.
"""

from __future__ import annotations

from torch import Tensor

from lit_xai.attribution.permutation_shap import PermutationSHAP
from lit_xai.semivalues import PermutationResult
from lit_xai.weighted_shap import WeightedShapResult, weighted_shap

__all__ = ["WeightedSHAP"]


class WeightedSHAP(PermutationSHAP):
    """WeightedSHAP values ``(B, d)`` (``(B, d, C)`` from :meth:`attribute_all`, chosen per class).

    Arguments are those of :class:`~lit_xai.attribution.permutation_shap.PermutationSHAP`. The last call's choice
    (candidates, their recovery errors, the chosen index) is kept in ``last_choice``.
    """

    name = "weighted_shap"

    last_choice: WeightedShapResult | None = None

    def _values(self, result: PermutationResult) -> Tensor:
        self.last_choice = weighted_shap(self._game, result)
        return self.last_choice.values
