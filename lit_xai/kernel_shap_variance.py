"""KernelSHAP's regression and its standard errors: what :func:`lit_xai.kernel_shap.kernel_shap` needs to know when to stop.

KernelSHAP (Lundberg & Lee, NeurIPS 2017) solves a kernel-weighted least-squares problem with the efficiency
constraint ``Σ_i φ_i = v(all) - v(∅)``; Covert & Lee ("Improving KernelSHAP", AISTATS 2021) solve it in closed form
from the running moments ``A = E[z zᵀ]``, ``b = E[z (v(z) - v(∅))]`` and stop once the estimated standard deviation
of ``φ`` is small relative to the range of the values. This module holds those pieces:

- :class:`Moments`: the running sums behind ``A`` and ``b``;
- :func:`constrained_solve`: the closed-form constrained solution ``φ`` and its sensitivity ``M``;
- :class:`BatchMeans`: the standard deviation of ``φ`` by the delta method over batch means;
- :func:`std_ratio`: Covert & Lee's convergence measure, compared with the user's threshold.

Shapes: ``d`` players, ``B`` inputs, ``C`` outputs; ``z`` is a ``(N, d)`` batch of coalitions, gains ``(B, N, C)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BatchMeans", "Moments", "constrained_solve", "inverse_factors", "std_ratio"]

#: ``A`` counts as singular when its eigenvalues span more than this ratio.
RCOND = 1e-10


def inverse_factors(a: Tensor) -> tuple[Tensor, Tensor] | None:
    """Eigen-decomposition of ``A``, or ``None`` while ``A`` is (numerically) singular: players not identified."""
    eigvals, eigvecs = torch.linalg.eigh(a)
    if eigvals[0] <= RCOND * eigvals[-1]:
        return None
    return eigvals, eigvecs


def constrained_solve(a: Tensor, b: Tensor, delta: Tensor) -> tuple[Tensor, Tensor] | None:
    """Minimise the kernel-weighted squared error subject to ``Σ_i φ_i = delta``.

    With ``A = E[z zᵀ]`` and ``b = E[z (v(z) - v(∅))]`` the Lagrangian gives
    ``φ = A⁻¹ (b - 1 (1ᵀA⁻¹b - delta) / (1ᵀA⁻¹1))``. ``a`` is ``(d, d)``, ``b`` is ``(B, d, C)``, ``delta``
    is ``(B, C)``. Returns ``(φ, M)`` with ``M = A⁻¹ - A⁻¹11ᵀA⁻¹ / (1ᵀA⁻¹1)``, the derivative of ``φ`` with
    respect to ``b - Aφ`` (used for the variance), or ``None`` while ``A`` is singular.
    """
    factors = inverse_factors(a)
    if factors is None:
        return None
    eigvals, eigvecs = factors
    bsz, d, c = b.shape
    inverse = (eigvecs / eigvals) @ eigvecs.T
    inv_one = inverse.sum(1, keepdim=True)  # A⁻¹1 (A is symmetric)
    projector = inverse - inv_one @ inv_one.T / inv_one.sum()
    inv_b = torch.einsum("ij,bjc->bic", inverse, b)
    multiplier = (inv_b.sum(1) - delta) / inv_one.sum()  # (B, C)
    return inv_b - inv_one.view(1, d, 1) * multiplier.unsqueeze(1), projector


class Moments:
    """Sums of ``z zᵀ`` and ``z (v(z) - v(∅))`` over ``n`` samples; with pairs each half has weight 1/2, so a pair is
    one sample. Rows may carry importance weights (Leverage SHAP), which scale their terms but not the count."""

    def __init__(self, bsz: int, d: int, c: int, device: torch.device) -> None:
        self.a = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.b = torch.zeros(bsz, d, c, dtype=torch.float64, device=device)
        self.n = 0.0

    def add(self, z: Tensor, gains: Tensor, weight: float, importance: Tensor | None = None) -> None:
        weighted = z if importance is None else z * importance.unsqueeze(1)
        self.a += weight * weighted.T @ z
        self.b += weight * torch.einsum("nd,bnc->bdc", weighted, gains)
        self.n += weight * z.shape[0]

    def merge(self, other: Moments) -> Moments:
        self.a += other.a
        self.b += other.b
        self.n += other.n
        return self

    def keep_inputs(self, rows: Tensor) -> None:
        self.b = self.b[rows]


class BatchMeans:
    """Variance of the constrained least-squares estimate by the delta method over batch means.

    Samples go into consecutive groups of ``size`` samples. Linearising the solution around the pooled estimate
    ``φ``, the error is ``M (b̂ - Âφ)`` (:func:`constrained_solve`), a mean of per-sample terms; the variance of a
    mean is estimated from the spread of its group means, ``Var(φ̂) ≈ size · Var_g[M (b_g - A_g φ)] / n``
    (the batch-means method). Unlike solving each group on its own (Covert & Lee's grouping), a group need not
    identify every player, so groups start at one sample and a standard deviation exists as soon as there are
    ``4 d`` samples (with fewer, some players' terms barely vary and the delta method understates their noise). Between ``groups`` and ``2 * groups`` complete groups are kept: when there are twice as
    many, neighbours are merged and ``size`` doubles, so memory stays bounded however long the run.
    """

    def __init__(self, shape: tuple[int, int, int], device: torch.device, groups: int) -> None:
        self.shape, self.device, self.groups = shape, device, groups
        self.complete: list[Moments] = []
        self.size = 1.0
        self.current = Moments(*shape, device)

    def add(self, z: Tensor, gains: Tensor, weight: float) -> None:
        start, rows = 0, z.shape[0]
        while start < rows:
            stop = min(rows, start + math.ceil((self.size - self.current.n) / weight - 1e-9))
            self.current.add(z[start:stop], gains[:, start:stop], weight)
            start = stop
            if self.current.n >= self.size - 1e-9:
                self.complete.append(self.current)
                self.current = Moments(*self.shape, self.device)
                if len(self.complete) == 2 * self.groups:
                    pairs = zip(self.complete[::2], self.complete[1::2])
                    self.complete = [first.merge(second) for first, second in pairs]
                    self.size *= 2

    def keep_inputs(self, rows: Tensor) -> None:
        self.shape = (len(rows), *self.shape[1:])
        for moments in [*self.complete, self.current]:
            moments.keep_inputs(rows)

    def std(self, phi: Tensor, projector: Tensor, total: float) -> Tensor:
        """Standard deviation of the pooled estimate ``φ`` ``(B, d, C)``; NaN before ``groups`` groups exist."""
        d = phi.shape[1]
        if len(self.complete) < self.groups or total < 4 * d:
            return torch.full_like(phi, float("nan"))
        a = torch.stack([g.a for g in self.complete])  # (G, d, d)
        b = torch.stack([g.b for g in self.complete])  # (G, B, d, C)
        residual = (b - torch.einsum("gij,bjc->gbic", a, phi)) / self.size
        influence = torch.einsum("ij,gbjc->gbic", projector, residual)
        # Residuals around a fitted φ understate the noise by about (n - fitted parameters) / n, the d - 1 free
        # values here (the HC1 correction of sandwich variances); it matters only in the first few batches.
        correction = total / (total - d + 1)
        return (influence.var(dim=0) * self.size / total * correction).sqrt()


def std_ratio(phi: Tensor, std: Tensor) -> Tensor:
    """Covert & Lee's convergence measure per input: ``max_c max_i std / (max_i φ - min_i φ)``."""
    spread = phi.amax(1) - phi.amin(1)
    worst = std.amax(1)
    # A constant output (zero spread) is converged when its std is zero too; std is NaN before it is known.
    ratio = torch.where(spread > 0, worst / spread, torch.where(worst == 0, 0.0, torch.inf))
    return torch.nan_to_num(ratio, nan=torch.inf).amax(-1)
