"""Explaining one image through the causal filters of its class (Ahmad et al., arXiv 2305.08950), and the graph's
figure.

The paper explains an image with the activations of the filters its class's causal graph keeps. Our choice for how
(the paper gives no formula): at one layer of the graph (by default the last one holding causal filters), each causal
filter ``f`` is weighted by its causal effect *on this image*, ``w_f = v(x) - v(x | do(f := fill))`` on the target
logit, and the map is ``ReLU(sum_f w_f A_f)`` over the causal filters only: an ablation-weighted CAM restricted to
the filters that are causal for the class over its images. Filters that are not causal do not enter the map, which
is where the claimed robustness comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_xai.algorithms.causal_graph.graph import CausalGraph, intervened_scores
from lit_xai.attribution._spatial import feature_grid, grid_to_pixels, grid_to_players, require_patch_grid
from lit_xai.attribution.base import Attribution, preserved_model_state, resolve_target
from lit_xai.channel_masking import ChannelGroups, ChannelMask
from lit_xai.io import atomic_open
from lit_xai.layers import forward_to_layer, resolve_layer
from lit_xai.links import get_link
from lit_xai.players import Players

__all__ = ["CausalFilterExplainer", "plot_causal_graph"]


class CausalFilterExplainer(Attribution):
    """Maps from the causal filters of each class's graph.

    Args:
        model: the network (eval mode).
        players: a :class:`~lit_xai.players.PatchGrid`.
        graphs: one :class:`~lit_xai.algorithms.causal_graph.CausalGraph` per class that will be explained.
        layer: the graph layer whose causal filters make the map; ``None``: the last one with causal filters.
        link: the score of the per-image effects (the graphs' link, normally ``"logits"``).
        batch_size: images per forward pass.

    ``attribute`` returns ``(B, d)`` (the map averaged per player), ``attribute_grid`` ``(B, h, w)``,
    ``attribute_pixels`` the bilinearly upsampled map. A class whose graph keeps no filter gets an all-zero map.
    """

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        graphs: dict[int, CausalGraph],
        layer: str | None = None,
        link: str | Callable[[Tensor], Tensor] = "logits",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, players)
        self.players = require_patch_grid(players, "CausalFilterExplainer")
        if not graphs:
            raise ValueError("pass graphs={class: build_causal_graph(...)} for the classes to explain")
        self.graphs, self.layer, self.batch_size = dict(graphs), layer, int(batch_size)
        self.link = get_link(link)

    def _layer(self, graph: CausalGraph) -> str | None:
        if self.layer is not None:
            if self.layer not in graph.layers:
                raise ValueError(
                    f"layer {self.layer!r} is not in the graph of class {graph.target} ({graph.layers})"
                )
            return self.layer
        kept = [layer for layer in graph.layers if graph.nodes[layer]]
        return kept[-1] if kept else None

    def _class_map(self, x: Tensor, graph: CausalGraph, clean: Tensor) -> Tensor | None:
        layer = self._layer(graph)
        if layer is None or not graph.nodes[layer]:
            return None
        filters = graph.nodes[layer]
        with torch.no_grad():
            activation = forward_to_layer(self.model, resolve_layer(self.model, layer), x)
        grid = feature_grid(self.model, activation, x, layer)
        keep = torch.ones(len(filters), grid.shape[1], dtype=torch.bool, device=x.device)
        keep[torch.arange(len(filters)), torch.tensor(filters)] = False
        masker = ChannelMask(ChannelGroups(grid.shape[1]), layer)
        removed = intervened_scores(self.model, masker, x, keep, self.link, graph.target, self.batch_size)
        weights = clean.unsqueeze(1) - removed  # (B, F): each causal filter's effect on this image
        return torch.einsum("bf,bfhw->bhw", weights.to(grid.dtype), grid[:, filters]).clamp_min(0)

    def _explain(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            logits = self.model(x)
        target = resolve_target(target, x.shape[0], logits)
        scores = self.link(logits)
        maps: Tensor | None = None
        for t in target.unique().tolist():
            if t not in self.graphs:
                raise ValueError(
                    f"no causal graph for class {t}; build one with build_causal_graph(..., target={t})"
                )
            rows = (target == t).nonzero().squeeze(1)
            cam = self._class_map(x[rows], self.graphs[t], scores[rows, t])
            if maps is None and cam is not None:
                maps = cam.new_zeros(x.shape[0], *cam.shape[1:])
            if cam is not None:
                maps[rows] = cam
        if maps is None:  # no class here has a causal filter: every map is empty
            gh, gw = self.players.grid_size
            maps = x.new_zeros(x.shape[0], gh, gw)
        return maps

    def attribute_grid(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map on the layer's grid, ``(B, h, w)``."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._explain(x, target)

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map upsampled bilinearly to the image, ``(B, H, W)``."""
        return grid_to_pixels(self.attribute_grid(x, target), self.players.image_size, mode="bilinear")

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        return grid_to_players(self._explain(x, target), self.players, reduce="mean")


def plot_causal_graph(graph: CausalGraph, path: str | Path | None = None, max_nodes: int = 12):
    """Draw the graph: one column per layer (input to output), causal filters as labelled dots sized by their mean
    effect, kept edges as lines as thick as their path effect. Writes ``path`` (PNG, atomically) when given; returns
    the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.2 * len(graph.layers) + 1, 0.45 * max_nodes + 1.5))
    position = {}
    largest = max([float(graph.effects[layer].max()) for layer in graph.layers] + [1e-12])
    for column, layer in enumerate(graph.layers):
        shown = graph.nodes[layer][:max_nodes]
        for row, f in enumerate(shown):
            position[(layer, f)] = (column, -row)
            size = 40 + 400 * max(float(graph.effects[layer][f]), 0.0) / largest
            ax.scatter(column, -row, s=size, color="tab:red", zorder=3)
            ax.annotate(str(f), (column, -row), textcoords="offset points", xytext=(7, 3), fontsize=7)
        if len(graph.nodes[layer]) > max_nodes:
            ax.annotate(f"+{len(graph.nodes[layer]) - max_nodes} more", (column, -max_nodes), fontsize=7)
    widest = max([e[4] for e in graph.edges] + [1e-12])
    for layer_a, f, layer_b, g, effect, _ in graph.edges:
        if (layer_a, f) in position and (layer_b, g) in position:
            (x0, y0), (x1, y1) = position[(layer_a, f)], position[(layer_b, g)]
            ax.plot([x0, x1], [y0, y1], color="0.4", linewidth=0.5 + 3 * max(effect, 0.0) / widest, zorder=1)
    ax.set_xticks(range(len(graph.layers)), graph.layers, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(graph.layers) - 0.5)
    ax.set_title(f"causal graph of class {graph.target} ({graph.num_images} images)", fontsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    if path is not None:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=90)
        plt.close(fig)
    return fig
