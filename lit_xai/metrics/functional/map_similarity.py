"""Similarity of two explanations of the same input, as used by the sanity checks of Adebayo et al. ("Sanity Checks
for Saliency Maps", NeurIPS 2018): Spearman rank correlation of the signed and of the absolute maps, and the
structural similarity index (SSIM; Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004) of the maps on their grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.metrics.functional._utils import spearman

__all__ = ["map_spearman", "map_ssim"]


def map_spearman(a: Tensor, b: Tensor, absolute: bool = False) -> Tensor:
    """Spearman rank correlation of two batches of maps ``(B, d)`` -> ``(B,)`` (of ``|a|, |b|`` with ``absolute``:
    Adebayo et al. report both, since many methods' signs are unreliable)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"maps must both be (batch, players), got {tuple(a.shape)} and {tuple(b.shape)}")
    if absolute:
        a, b = a.abs(), b.abs()
    return spearman(a.double(), b.double()).float()


def map_ssim(a: Tensor, b: Tensor, grid: tuple[int, int], window: int = 3) -> Tensor:
    """SSIM of two batches of maps ``(B, d)`` laid out on ``grid = (rows, cols)`` -> ``(B,)``.

    Each map is first scaled to ``[0, 1]`` by its own minimum and maximum (maps of different models differ in
    scale, which SSIM would otherwise count as dissimilarity), then SSIM is averaged over every ``window x window``
    patch (no padding; population statistics; constants ``(0.01)^2`` and ``(0.03)^2`` for data range 1).
    """
    rows, cols = grid
    if a.shape != b.shape or a.dim() != 2 or a.shape[1] != rows * cols:
        raise ValueError(
            f"maps must both be (batch, {rows * cols}) for grid {grid}, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if not 1 <= window <= min(rows, cols):
        raise ValueError(f"window must be in 1..{min(rows, cols)} for grid {grid}, got {window}")
    x, y = (_unit_range(m.double()).view(-1, 1, rows, cols) for m in (a, b))
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731 - local means over every window
    mx, my = pool(x), pool(y)
    vx, vy = pool(x * x) - mx * mx, pool(y * y) - my * my
    cov = pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.flatten(1).mean(1).float()


def _unit_range(maps: Tensor) -> Tensor:
    low = maps.amin(1, keepdim=True)
    span = maps.amax(1, keepdim=True) - low
    # A constant map carries no structure: it becomes all zeros rather than 0 / 0.
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-300), torch.zeros_like(maps))
