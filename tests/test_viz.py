"""Figures for a paper (issue 14, item 5): one colour scale and a colour bar per grid of heatmaps, a diverging map
for signed values, curves that differ in style as well as colour, and bands kept inside the values' range."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from lit_xai.viz import DIVERGING, SEQUENTIAL, curves, explanation_grid


def heat_images(fig, column, rows=2, cols=3):
    """The heatmap drawn over the image in each row of ``column`` (the second image of the panel)."""
    return [fig.axes[row * cols + column].images[1] for row in range(rows)]


def test_every_panel_of_a_grid_shares_one_colour_scale_and_one_colour_bar():
    strong, weak = torch.randn(2, 8, 8) * 5, torch.randn(2, 8, 8) * 0.01
    fig = explanation_grid(torch.rand(2, 3, 8, 8), {"strong": strong, "weak": weak})
    limit = float(strong.abs().max())
    panels = heat_images(fig, 1) + heat_images(fig, 2)
    assert [image.get_clim() for image in panels] == [pytest.approx((-limit, limit))] * 4
    assert {image.get_cmap().name for image in panels} == {DIVERGING}
    bars = fig.axes[6:]
    assert len(bars) == 1 and bars[0].get_ylabel() == "attribution"
    plt.close(fig)


def test_unsigned_maps_get_a_sequential_map_from_zero():
    fig = explanation_grid(
        torch.rand(2, 1, 4, 4), {"rollout": torch.rand(2, 4, 4), "gradcam": torch.rand(2, 4, 4)}
    )
    panel = heat_images(fig, 1)[0]
    assert panel.get_cmap().name == SEQUENTIAL and panel.get_clim()[0] == 0.0
    plt.close(fig)


def test_a_scale_per_method_gives_each_column_its_own_limits_and_bar():
    maps = {"gradient": torch.full((2, 4, 4), -0.01), "shapley": torch.full((2, 4, 4), 0.5)}
    fig = explanation_grid(torch.rand(2, 1, 4, 4), maps, scale="method", label="value")
    assert heat_images(fig, 1)[0].get_clim() == pytest.approx((-0.01, 0.01))
    assert heat_images(fig, 2)[1].get_clim() == pytest.approx((0.0, 0.5))
    assert [bar.get_xlabel() for bar in fig.axes[6:]] == ["value", "value"]
    with pytest.raises(ValueError, match="scale must be"):
        explanation_grid(torch.rand(1, 1, 4, 4), maps, scale="panel")
    plt.close(fig)


def test_curves_differ_in_line_style_and_marker_even_when_long():
    same = torch.linspace(0, 1, 65)  # 65 points: a deletion curve over 64 players
    fig = curves({"kernel_shap": same, "leave_one_out": same, "rise": same, "random": same})
    lines = fig.axes[0].lines
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 4 and all(line.get_marker() not in (None, "None", "") for line in lines)
    plt.close(fig)


def test_bands_are_clipped_to_the_range_of_the_values():
    fig = curves({"ours": [0.05, 0.5, 0.95]}, bands={"ours": [0.2, 0.2, 0.2]}, value_range=(0.0, 1.0))
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.0) and band.max() == pytest.approx(1.0)
    plt.close(fig)
