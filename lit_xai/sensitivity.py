"""Global sensitivity analysis of a model's output to its players: Sobol total indices and HSIC.

Both treat the players' presence as random inputs and ask how much of the output's variation (Sobol) or
dependence (HSIC) each one accounts for, from quasi-Monte-Carlo designs (:class:`torch.quasirandom.SobolEngine`):

- :func:`sobol_design` and :func:`jansen_total_indices`: Sobol total-order indices by Jansen's estimator ("Analysis
  of variance designs for model output", 1999), the estimator of Sobol attribution (Fel, Cadène, Chalvidal, Cord,
  Vigouroux & Serre, "Look at the Variance! Efficient Black-box Explanations with Sobol-based Sensitivity
  Analysis", NeurIPS 2021). Two matrices ``A``, ``B`` of ``N`` points in ``[0, 1]^d`` (the two halves of a
  ``2d``-dimensional Sobol sequence) and ``C_i`` = ``A`` with column ``i`` taken from ``B``: ``N (d + 2)``
  evaluations, ``ST_i = Σ_n (f(A_n) - f(C_i,n))² / (2 N Var f(A))``.
- :func:`hsic_scores`: the Hilbert-Schmidt independence criterion between each player's binary presence and the
  output (Novello, Fel & Vigouroux, "Making Sense of Dependence: Efficient Black-box Explanations Using Dependence
  Measure", NeurIPS 2022): a Dirac kernel on the binary input, an RBF kernel on the output whose width is the median
  output (the authors' choice), ``HSIC_i = tr(K_i H L H) / N²`` with ``H = I - 11ᵀ/N``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

__all__ = ["binary_design", "hsic_scores", "jansen_total_indices", "sobol_design"]


def sobol_design(
    num_players: int, num_designs: int, scramble: bool = False, seed: int | None = None
) -> Tensor:
    """The points ``[A; B; C_1; ...; C_d]``, ``(N (d + 2), d)`` float64 in ``[0, 1]``.

    ``A`` and ``B`` are the first and last ``d`` coordinates of ``N`` points of a ``2d``-dimensional Sobol sequence
    (unscrambled by default, as the authors'); ``C_i`` (rows ``(2 + i) N ... (3 + i) N``) is ``A`` with column ``i``
    from ``B``. Powers of two for ``N`` keep the sequence balanced.
    """
    d = int(num_players)
    if d < 1 or num_designs < 2:
        raise ValueError(f"need at least 1 player and 2 designs, got {num_players} and {num_designs}")
    points = SobolEngine(2 * d, scramble=scramble, seed=seed).draw(num_designs, dtype=torch.float64)
    a, b = points[:, :d], points[:, d:]
    c = a.unsqueeze(0).repeat(d, 1, 1)  # (d, N, d)
    players = torch.arange(d)
    c[players, :, players] = b.T
    return torch.cat([a, b, c.reshape(d * num_designs, d)])


def jansen_total_indices(values: Tensor, num_designs: int) -> Tensor:
    """Jansen's total-order Sobol indices from the outputs on :func:`sobol_design`'s points.

    Args:
        values: ``(..., N (d + 2), C)`` outputs in the design's row order.
        num_designs: ``N``.

    Returns:
        ``(..., d, C)``; zero where the output does not vary over ``A``.
    """
    n = int(num_designs)
    total = values.shape[-2]
    if total % n or total // n < 3:
        raise ValueError(f"expected N (d + 2) = {n} (d + 2) rows of outputs, got {total}")
    d = total // n - 2
    values = values.double()
    y_a = values[..., :n, :]
    y_c = values[..., 2 * n :, :].reshape(*values.shape[:-2], d, n, values.shape[-1])
    variance = y_a.var(dim=-2)  # (..., C), unbiased
    squared = (y_a.unsqueeze(-3) - y_c).pow(2).sum(-2) / (2 * n)  # (..., d, C)
    variance = variance.unsqueeze(-2)
    return torch.where(variance > 0, squared / variance.clamp_min(1e-300), torch.zeros_like(squared))


def binary_design(
    num_players: int, num_designs: int, scramble: bool = False, seed: int | None = None
) -> Tensor:
    """``(N, d)`` keep-masks: a ``d``-dimensional Sobol sequence thresholded at 1/2 (each player kept half the time,
    the columns balanced), as HSIC attribution samples them."""
    points = SobolEngine(int(num_players), scramble=scramble, seed=seed).draw(
        num_designs, dtype=torch.float64
    )
    return points >= 0.5


def hsic_scores(keep: Tensor, values: Tensor) -> Tensor:
    """HSIC between each player's presence and the output, ``(..., d, C)``.

    With the Dirac input kernel ``K_i(a, b) = 1 + δ(z_ia = z_ib)`` (any offset cancels after centring) and centred
    output kernel ``L̃ = H L H``, ``tr(K_i L̃) = 2 z_iᵀ L̃ z_i`` because ``L̃``'s rows sum to zero; so the score is
    ``2 z_iᵀ L̃ z_i / N²`` for every player at once. ``L = exp(-(y_a - y_b)² / (2 w²))`` with ``w`` the median
    output (the authors' width; the median distance between outputs when the median is not positive).

    Args:
        keep: ``(N, d)`` binary masks.
        values: ``(..., N, C)`` outputs.
    """
    z = keep.to(torch.float64)
    n = z.shape[0]
    y = values.double().movedim(-1, -2)  # (..., C, N)
    width = y.median(dim=-1, keepdim=True).values  # (..., C, 1)
    distance = (y.unsqueeze(-1) - y.unsqueeze(-2)).abs()  # (..., C, N, N)
    spread = distance.flatten(-2).median(dim=-1).values.unsqueeze(-1)
    width = torch.where(width > 0, width, spread)
    gram = torch.exp(-distance.pow(2) / (2 * width.unsqueeze(-1).clamp_min(1e-12) ** 2))
    centred = (
        gram - gram.mean(-1, keepdim=True) - gram.mean(-2, keepdim=True) + gram.mean((-2, -1), keepdim=True)
    )
    scores = 2 * torch.einsum("ni,...nm,mi->...i", z, centred, z) / n**2  # (..., C, d)
    return scores.movedim(-1, -2)
