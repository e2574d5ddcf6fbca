"""Means with Student-t confidence intervals, for reporting per-image scores.

Explanation metrics vary a lot from image to image, so a mean without its uncertainty says little when two methods
are compared. The interval here is the usual one for a mean: ``mean +- t_{(1+c)/2, n-1} * s / sqrt(n)``. It can be
computed from the three moments ``(sum, sum of squares, count)``, which add up across batches and processes, so the
metric classes keep only those (DDP-correct, constant memory).

The t quantile is SciPy's (``scipy.stats.t.ppf``).
"""

from __future__ import annotations

import math

import torch
from scipy import stats
from torch import Tensor

__all__ = ["confidence_interval_from_moments", "mean_confidence_interval"]


def confidence_interval_from_moments(
    total: float | Tensor, total_sq: float | Tensor, count: float | Tensor, confidence: float = 0.95
) -> dict[str, float]:
    """Mean, sample standard deviation and t-interval from ``sum``, ``sum of squares`` and ``count``.

    Returns:
        ``{"mean", "std", "half_width", "low", "high", "count"}`` as floats; with fewer than two values the
        standard deviation and interval are NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence}")
    total, total_sq, count = float(total), float(total_sq), float(count)
    mean = total / count if count > 0 else math.nan
    if count < 2:
        std = half_width = math.nan
    else:
        variance = max(total_sq - total * total / count, 0.0) / (count - 1)
        std = math.sqrt(variance)
        half_width = float(stats.t.ppf(0.5 + confidence / 2, count - 1)) * std / math.sqrt(count)
    return {
        "mean": mean,
        "std": std,
        "half_width": half_width,
        "low": mean - half_width,
        "high": mean + half_width,
        "count": count,
    }


def mean_confidence_interval(values: Tensor, confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-interval of per-image values (any shape; all entries are pooled)."""
    values = torch.as_tensor(values).detach().double().flatten()
    return confidence_interval_from_moments(values.sum(), values.square().sum(), values.numel(), confidence)
