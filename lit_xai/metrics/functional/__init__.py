"""Explanation metrics as pure tensor functions: batched, on any device, usable in losses and tests.

All removal-based metrics work at player level through a masker (``masker(model, x, keep) -> logits``), so they
apply to ViTs (token dropping), CNNs (baseline filling) and tabular models alike. Attributions are ``(B, d)`` for
the target class; targets are ``(B,)`` class indices.
"""

from lit_xai.metrics.functional.completeness_soundness import completeness_soundness
from lit_xai.metrics.functional.confidence import (
    confidence_interval_from_moments,
    mean_confidence_interval,
)
from lit_xai.metrics.functional.eraser import eraser
from lit_xai.metrics.functional.insertion_deletion import insertion_deletion
from lit_xai.metrics.functional.localization import (
    effective_heat_ratio,
    localization,
    pointing_game,
    prepare_localization,
    relevance_mass_accuracy,
)
from lit_xai.metrics.functional.sensitivity_n import sensitivity_n
from lit_xai.metrics.functional.shapley_error import shapley_error

__all__ = [
    "insertion_deletion",
    "sensitivity_n",
    "shapley_error",
    "localization",
    "prepare_localization",
    "pointing_game",
    "relevance_mass_accuracy",
    "effective_heat_ratio",
    "eraser",
    "completeness_soundness",
    "mean_confidence_interval",
    "confidence_interval_from_moments",
]
