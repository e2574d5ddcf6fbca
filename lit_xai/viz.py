"""Figures: heatmaps over images, grids of explanations, bar charts of tabular attributions, metric curves.

Matplotlib with the Agg backend (no screen needed); every function returns the figure and, given a path, writes a
PNG atomically. Figures are drawn to be printed in a paper: signed attributions use a diverging colour map centred
on zero (:data:`DIVERGING`), so positive and negative contributions read at a glance, and unsigned ones a sequential
map from zero (:data:`SEQUENTIAL`); a grid of heatmaps shares one colour scale with one colour bar, so that equal
colours mean equal values in every panel (panels scaled separately make a weak explanation look as strong as a
strong one); and curves differ in line style and marker as well as colour, so that one hidden under another, or a
print in grey, still shows every curve.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from torch import Tensor  # noqa: E402

from lit_xai.io import atomic_open  # noqa: E402

__all__ = [
    "DIVERGING",
    "SEQUENTIAL",
    "colour_scale",
    "image_for_display",
    "prediction_caption",
    "explanation_grid",
    "feature_bars",
    "curves",
    "save_figure",
    "figure_to_array",
    "heatmap_overlay",
    "tile_images",
]


#: Signed attributions: blue negative, white zero, red positive.
DIVERGING = "RdBu_r"
#: Attributions that are never negative (attention, GradCAM after its ReLU): white zero to dark red.
SEQUENTIAL = "Reds"
#: Line styles and markers cycled with the colours, so that curves differ in three ways.
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG through a temporary file, so a crash never leaves a truncated image."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def figure_to_array(fig: plt.Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (for TensorBoard and W&B)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def prediction_caption(
    predicted: int, probability: float, label: int | None = None, names: Sequence[str] | None = None
) -> str:
    """``"pred cat (0.98) / true dog"``: the predicted class and its probability, and the label where known,
    by name when ``names`` are given (indices otherwise).

    Example:
        >>> prediction_caption(1, 0.984, 0, names=["cat", "dog"]), prediction_caption(3, 0.5)
        ('pred dog (0.98) / true cat', 'pred 3 (0.50)')
    """

    def name(index: int) -> str:
        return str(names[index]) if names is not None and 0 <= index < len(names) else str(index)

    caption = f"pred {name(int(predicted))} ({float(probability):.2f})"
    return caption if label is None else f"{caption} / true {name(int(label))}"


def image_for_display(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor with any normalisation -> ``(H, W[, 3])`` array in [0, 1] (min-max per image)."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    if image.shape[0] == 1:
        return image[0].numpy()
    return image[:3].permute(1, 2, 0).numpy()


def _symmetric_limit(values: Tensor) -> float:
    return float(values.detach().abs().max().clamp_min(1e-12))


def colour_scale(*values: Tensor) -> tuple[str, Normalize]:
    """One colour map and range for all of ``values``: diverging and symmetric about zero when any value is
    negative, else sequential from zero to the largest value.

    Example:
        >>> import torch
        >>> cmap, norm = colour_scale(torch.tensor([-1.0, 0.5]), torch.tensor([2.0]))
        >>> cmap, norm.vmin, norm.vmax
        ('RdBu_r', -2.0, 2.0)
        >>> cmap, norm = colour_scale(torch.tensor([0.0, 3.0]))
        >>> cmap, norm.vmin, norm.vmax
        ('Reds', 0.0, 3.0)
    """
    flat = torch.cat([v.detach().float().cpu().reshape(-1) for v in values])
    limit = _symmetric_limit(flat)
    if bool((flat < 0).any()):
        return DIVERGING, Normalize(-limit, limit)
    return SEQUENTIAL, Normalize(0.0, limit)


def heatmap_overlay(image: Tensor, heat: Tensor, alpha: float = 0.6, min_size: int = 96) -> np.ndarray:
    """The image and, beside it, the heatmap drawn over it, as one ``(H', 2 W' + 2, 3)`` uint8 array.

    The diverging colours of :func:`explanation_grid` (:data:`DIVERGING`, centred on zero, scaled per image: these
    are thumbnails logged during training, not a figure to compare panels in), computed with array arithmetic rather
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
    colours = matplotlib.colormaps[DIVERGING](scaled.numpy())[..., :3]
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
    scale: str = "figure",
    label: str = "attribution",
) -> plt.Figure:
    """One row per image: the image, then each method's pixel map drawn over it, with a colour bar.

    Args:
        images: ``(N, C, H, W)``.
        maps: method name -> ``(N, H, W)`` pixel maps (upsample player values with ``players.upsample``).
        titles: one caption per image (e.g. "pred cat (0.98) / true cat").
        path: write the figure here as a PNG.
        alpha: opacity of the heatmap.
        scale: ``"figure"``: every panel on one colour scale, one colour bar (compare methods whose values share
            a unit, e.g. Shapley values of one game); ``"method"``: one scale and colour bar per column (methods in
            different units, e.g. gradients next to probabilities).
        label: the colour bars' label.

    Example:
        >>> import torch
        >>> fig = explanation_grid(torch.rand(2, 1, 4, 4), {"a": torch.ones(2, 4, 4), "b": -3 * torch.ones(2, 4, 4)})
        >>> [image.get_clim() for image in fig.axes[1].images[1:] + fig.axes[5].images[1:]]  # panels a and b
        [(-3.0, 3.0), (-3.0, 3.0)]
        >>> fig.axes[-1].get_ylabel()  # the colour bar
        'attribution'
    """
    if scale not in ("figure", "method"):
        raise ValueError(f"scale must be 'figure' or 'method', got {scale!r}")
    n = images.shape[0]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(
        n, cols, figsize=(1.9 * cols + 0.6, 1.9 * n), squeeze=False, layout="constrained"
    )
    shown = [image_for_display(image) for image in images]
    for i in range(n):
        for ax in axes[i]:
            ax.imshow(shown[i], cmap="gray" if shown[i].ndim == 2 else None)
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=7)
    shared = colour_scale(*maps.values()) if maps else None
    for j, (name, values) in enumerate(maps.items(), start=1):
        cmap, norm = shared if scale == "figure" else colour_scale(values)
        for i in range(n):
            heat = axes[i, j].imshow(
                values[i].detach().float().cpu().numpy(), cmap=cmap, norm=norm, alpha=alpha
            )
        axes[0, j].set_title(name, fontsize=8)
        if scale == "method":
            bar = fig.colorbar(heat, ax=axes[:, j], location="bottom", shrink=0.8)
            bar.set_label(label, fontsize=7)
            bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if maps and scale == "figure":
        bar = fig.colorbar(heat, ax=axes[:, 1:], shrink=0.8)
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
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


def _marker_positions(k: int, length: int) -> tuple[int, int]:
    """Every ``step``-th point of a long curve, starting a little later for each curve, so that the markers of
    curves lying on one another fall side by side rather than on top of one another."""
    step = max(1, length // 12)
    return (k * max(1, step // 4)) % step, step


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
    value_range: tuple[float | None, float | None] | None = None,
) -> plt.Figure:
    """Line plot of several named series (optionally ± bands and horizontal reference lines).

    Every series gets its own colour, line style and marker (markers at about a dozen points of a long series,
    shifted from one series to the next), so that a curve lying on another one still shows. ``value_range`` is the range the values can take (``(0, 1)``
    for probabilities): bands are clipped to it rather than drawn where no value can be.

    Example:
        >>> fig = curves({"a": [0.5, 0.9], "b": [0.5, 0.9]}, bands={"a": [0.3, 0.3]}, value_range=(0, 1))
        >>> [(line.get_linestyle(), line.get_marker()) for line in fig.axes[0].lines]
        [('-', 'o'), ('--', 's')]
        >>> float(fig.axes[0].collections[0].get_paths()[0].vertices[:, 1].max())  # 0.9 + 0.3, clipped
        1.0
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    low, high = value_range or (None, None)
    styles = itertools.cycle(zip(LINE_STYLES * 2, MARKERS))
    for k, (name, ys) in enumerate(series.items()):
        ys = torch.as_tensor(ys, dtype=torch.float64)
        xs = torch.arange(len(ys)) if x is None else torch.as_tensor(x, dtype=torch.float64)
        linestyle, marker = next(styles)
        ax.plot(
            xs.numpy(),
            ys.numpy(),
            label=name,
            color=f"C{k % 10}",
            linestyle=linestyle,
            marker=marker,
            markersize=3.5,
            markevery=_marker_positions(k, len(ys)),
            linewidth=1.3,
        )
        if bands and name in bands:
            band = torch.as_tensor(bands[name], dtype=torch.float64)
            lower, upper = (ys - band).clamp(min=low), (ys + band).clamp(max=high)
            ax.fill_between(xs.numpy(), lower.numpy(), upper.numpy(), alpha=0.2, color=f"C{k % 10}")
    # Reference lines take the next colours of the cycle and go in the legend: text labels on the lines would
    # overlap when two levels are close.
    for k, (name, level) in enumerate((hlines or {}).items(), start=len(series)):
        ax.axhline(level, linestyle=LINE_STYLES[1 + k % 3], color=f"C{k % 10}", linewidth=1, label=name)
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
