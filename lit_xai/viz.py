"""Figures: heatmaps over images, grids of explanations, bar charts of tabular attributions, metric curves.

Matplotlib with the Agg backend (no screen needed); every function returns the figure and, given a path, writes a
PNG atomically. Attributions are drawn with a diverging colour map centred on zero, so positive and negative
contributions read at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from lit_xai.io import atomic_open  # noqa: E402

__all__ = [
    "image_for_display",
    "explanation_grid",
    "feature_bars",
    "curves",
    "save_figure",
    "figure_to_array",
    "heatmap_overlay",
    "tile_images",
]


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG through a temporary file, so a crash never leaves a truncated image."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def figure_to_array(fig: plt.Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (for TensorBoard and W&B)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def image_for_display(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor with any normalisation -> ``(H, W[, 3])`` array in [0, 1] (min-max per image)."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    if image.shape[0] == 1:
        return image[0].numpy()
    return image[:3].permute(1, 2, 0).numpy()


def _symmetric_limit(values: Tensor) -> float:
    return float(values.detach().abs().max().clamp_min(1e-12))


def heatmap_overlay(image: Tensor, heat: Tensor, alpha: float = 0.6, min_size: int = 96) -> np.ndarray:
    """The image and, beside it, the heatmap drawn over it, as one ``(H', 2 W' + 2, 3)`` uint8 array.

    The same colours as :func:`explanation_grid` (``bwr``, centred on zero), computed with array arithmetic rather
    than a Matplotlib figure: fast enough to run for a handful of images at every validation epoch. Small images are
    enlarged by pixel repetition to at least ``min_size`` pixels on their shorter side.

    Args:
        image: ``(C, H, W)`` with any normalisation.
        heat: ``(H, W)`` pixel map (upsample player values with ``players.upsample``).
        alpha: opacity of the heatmap.
        min_size: smallest side of each half, in pixels.
    """
    shown = image_for_display(image)
    rgb = np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown
    heat = heat.detach().float().cpu()
    scaled = (heat / _symmetric_limit(heat) + 1.0) / 2.0  # [-limit, limit] -> [0, 1], zero at the centre
    colours = matplotlib.colormaps["bwr"](scaled.numpy())[..., :3]
    blended = (1.0 - alpha) * rgb + alpha * colours
    factor = max(1, -(-min_size // min(rgb.shape[:2])))  # ceiling division
    halves = [np.kron(part, np.ones((factor, factor, 1))) for part in (rgb, blended)]
    gap = np.ones((halves[0].shape[0], 2, 3))
    return (np.concatenate([halves[0], gap, halves[1]], axis=1) * 255).round().astype(np.uint8)


def tile_images(images: Sequence[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Arrange ``(H, W, 3)`` uint8 arrays (sizes may differ) on a white grid, row by row."""
    if not images:
        raise ValueError("tile_images needs at least one image")
    height = max(image.shape[0] for image in images) + pad
    width = max(image.shape[1] for image in images) + pad
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    canvas = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * height, (i % columns) * width
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image[..., :3]
    return canvas


def explanation_grid(
    images: Tensor,
    maps: dict[str, Tensor],
    titles: Sequence[str] | None = None,
    path: str | Path | None = None,
    alpha: float = 0.6,
) -> plt.Figure:
    """One row per image: the image, then each method's pixel map drawn over it.

    Args:
        images: ``(N, C, H, W)``.
        maps: method name -> ``(N, H, W)`` pixel maps (upsample player values with ``players.upsample``).
        titles: one caption per image (e.g. "pred 3 (0.98) / true 3").
        path: write the figure here as a PNG.
        alpha: opacity of the heatmap.
    """
    n = images.shape[0]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        shown = image_for_display(images[i])
        axes[i, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=7)
        for j, (name, values) in enumerate(maps.items(), start=1):
            heat = values[i].detach().float().cpu()
            limit = _symmetric_limit(heat)
            axes[i, j].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
            axes[i, j].imshow(heat.numpy(), cmap="bwr", vmin=-limit, vmax=limit, alpha=alpha)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def feature_bars(
    values: Tensor,
    feature_names: Sequence[str] | None = None,
    title: str = "",
    path: str | Path | None = None,
    top_k: int = 15,
) -> plt.Figure:
    """Horizontal bars of one sample's tabular attributions, the ``top_k`` largest in magnitude."""
    values = values.detach().float().cpu()
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(values.numel())]
    order = values.abs().argsort(descending=True)[:top_k].flip(0)
    fig, ax = plt.subplots(figsize=(4.5, 0.25 * len(order) + 1))
    colors = ["tab:red" if values[i] > 0 else "tab:blue" for i in order]
    ax.barh([names[i] for i in order], values[order].numpy(), color=colors)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def curves(
    series: dict[str, Tensor | Sequence[float]],
    x: Tensor | Sequence[float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    path: str | Path | None = None,
    bands: dict[str, Tensor | Sequence[float]] | None = None,
    hlines: dict[str, float] | None = None,
    logx: bool = False,
) -> plt.Figure:
    """Line plot of several named series (optionally ± bands and horizontal reference lines)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, ys in series.items():
        ys = torch.as_tensor(ys, dtype=torch.float64)
        xs = torch.arange(len(ys)) if x is None else torch.as_tensor(x, dtype=torch.float64)
        ax.plot(xs.numpy(), ys.numpy(), label=name, marker="o" if len(ys) < 25 else None, markersize=3)
        if bands and name in bands:
            band = torch.as_tensor(bands[name], dtype=torch.float64)
            ax.fill_between(xs.numpy(), (ys - band).numpy(), (ys + band).numpy(), alpha=0.2)
    # Reference lines take the next colours of the cycle and go in the legend: text labels on the lines would
    # overlap when two levels are close.
    for k, (name, level) in enumerate((hlines or {}).items(), start=len(series)):
        ax.axhline(level, linestyle="--", color=f"C{k % 10}", linewidth=1, label=name)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
