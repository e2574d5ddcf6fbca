"""Agreement with ground-truth Shapley values as a :class:`torchmetrics.Metric`, DDP-correct.

See :func:`lit_xai.metrics.functional.shapley_error` for the scores.
"""

from __future__ import annotations

from torch import Tensor

from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.functional.shapley_error import shapley_error

__all__ = ["ShapleyError"]

SCORES = ("squared_error", "pearson", "spearman", "sign_agreement", "top_k_overlap")


class ShapleyError(ExplanationMetric):
    """Mean per-image errors of attributions against ground-truth Shapley values.

    Args:
        top_k: players compared by the top-k overlap; ``None`` uses 10% of the players (at least one).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(attributions, shapley_values)`` with both ``(B, d)``; ``compute()`` returns ``{"squared_error",
    "pearson", "spearman", "sign_agreement", "top_k_overlap"}``.
    """

    higher_is_better = None  # the error is lower-is-better, the agreements higher-is-better

    def __init__(self, top_k: int | None = None, **kwargs) -> None:
        super().__init__(SCORES, **kwargs)
        self.top_k = top_k

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """Correlations in [-1, 1], shares in [0, 1], the squared error from 0."""
        return {
            "squared_error": (0.0, float("inf")),
            "pearson": (-1.0, 1.0),
            "spearman": (-1.0, 1.0),
            "sign_agreement": (0.0, 1.0),
            "top_k_overlap": (0.0, 1.0),
        }

    def update(self, attributions: Tensor, shapley_values: Tensor) -> None:
        """Score a batch of attributions against their ground truth."""
        self._accumulate(shapley_error(attributions, shapley_values, top_k=self.top_k))
