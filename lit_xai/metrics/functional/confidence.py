"""Means with Student-t confidence intervals, for reporting per-image scores.

Explanation metrics vary a lot from image to image, so a mean without its uncertainty says little when two methods
are compared. The interval here is the usual one for a mean: ``mean +- t_{(1+c)/2, n-1} * s / sqrt(n)``. It can be
computed from the three moments ``(sum, sum of squares, count)``, which add up across batches and processes, so the
metric classes keep only those (DDP-correct, constant memory).

The t quantile is computed here (no SciPy at run time): with ``t = sqrt(v) tan(theta)`` the Student-t CDF becomes
``1/2 + c_v * integral_0^theta cos(u)^(v-1) du``, a smooth integral over a bounded interval, which Simpson's rule
evaluates to ~1e-13 and Newton's method inverts; for ``v >= 1000`` the Cornish-Fisher expansion around the normal
quantile is exact to double precision.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import Tensor

__all__ = ["t_quantile", "t_upper_tail", "confidence_interval_from_moments", "mean_confidence_interval"]

_SIMPSON_INTERVALS = 2000  # even; error ~1e-13 for the smooth integrand on at most [0, pi/2]
_CORNISH_FISHER_DF = 1000.0  # from here on the asymptotic expansion is exact to double precision


def _log_t_constant(df: float) -> float:
    """``log c_v`` with ``c_v = Gamma((v+1)/2) / (sqrt(pi) Gamma(v/2))``."""
    return math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)


def _t_central_mass(theta: float, df: float) -> float:
    """``P(0 <= T <= sqrt(df) tan(theta))`` for Student's t with ``df`` degrees of freedom (Simpson's rule)."""
    step = theta / _SIMPSON_INTERVALS
    power = df - 1.0
    total = 1.0 + max(math.cos(theta), 0.0) ** power  # the end points, f(0) = 1
    total += math.fsum(
        (4.0 if i % 2 else 2.0) * math.cos(i * step) ** power for i in range(1, _SIMPSON_INTERVALS)
    )
    return math.exp(_log_t_constant(df)) * total * step / 3


def _cornish_fisher(z: float, df: float) -> float:
    """Asymptotic expansion of the t quantile in powers of ``1/df`` around the normal quantile ``z``."""
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_upper_tail(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df >= 1`` degrees of freedom: the one-sided p-value of a t statistic.

    Uses the same integral as :func:`t_quantile` (Simpson's rule over ``theta = atan(t / sqrt(df))``).
    """
    if not df >= 1:
        raise ValueError(f"df must be at least 1 (two or more values), got {df}")
    if math.isnan(t):
        return math.nan
    if t < 0:
        return 1.0 - t_upper_tail(-t, df)
    return max(0.5 - _t_central_mass(math.atan(t / math.sqrt(df)), df), 0.0)


def t_quantile(probability: float, df: float) -> float:
    """The ``probability``-quantile of Student's t distribution with ``df >= 1`` degrees of freedom."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie in (0, 1), got {probability}")
    if not df >= 1:
        raise ValueError(f"df must be at least 1 (two or more values), got {df}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    if probability == 0.5:
        return 0.0
    z = NormalDist().inv_cdf(probability)
    if df >= _CORNISH_FISHER_DF:
        return _cornish_fisher(z, df)
    # Newton's method on theta (the mass's derivative is c_v cos(theta)^(df-1)), kept inside a bisection bracket.
    mass, constant = probability - 0.5, math.exp(_log_t_constant(df))
    low, high = 0.0, math.pi / 2
    theta = math.atan(z / math.sqrt(df))
    for _ in range(100):
        error = _t_central_mass(theta, df) - mass
        if error < 0:
            low = theta
        else:
            high = theta
        slope = constant * math.cos(theta) ** (df - 1)
        candidate = theta - error / slope if slope > 0 else -1.0
        if not low < candidate < high:
            candidate = 0.5 * (low + high)
        if abs(candidate - theta) < 1e-15 or high - low < 1e-15:
            theta = candidate
            break
        theta = candidate
    return math.sqrt(df) * math.tan(theta)


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
        half_width = t_quantile(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
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
