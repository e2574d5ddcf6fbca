"""Explanation metrics: :class:`torchmetrics.Metric` classes (DDP-correct) over the pure functions in
:mod:`lit_xai.metrics.functional`.

Every class accumulates per-image scores as sums, sums of squares and a count, so ``compute()`` gives the means
across batches and processes, and ``summary()`` adds Student-t confidence intervals for reports.
"""

from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.completeness_soundness import CompletenessSoundness
from lit_xai.metrics.eraser import Eraser
from lit_xai.metrics.functional.confidence import (
    confidence_interval_from_moments,
    mean_confidence_interval,
)
from lit_xai.metrics.insertion_deletion import InsertionDeletion
from lit_xai.metrics.localization import Localization
from lit_xai.metrics.registry import METRICS, build_metric, register_metric
from lit_xai.metrics.sensitivity_n import SensitivityN
from lit_xai.metrics.shapley_error import ShapleyError

__all__ = [
    "ExplanationMetric",
    "InsertionDeletion",
    "SensitivityN",
    "ShapleyError",
    "Localization",
    "Eraser",
    "CompletenessSoundness",
    "mean_confidence_interval",
    "confidence_interval_from_moments",
    "METRICS",
    "build_metric",
    "register_metric",
]
