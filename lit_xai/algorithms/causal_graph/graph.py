"""Causal explanatory graphs of a class: filters with a significant causal effect, linked across layers.

After Ahmad et al., "Causal Analysis for Robust Interpretability of Neural Networks" (arXiv 2305.08950): filters of
hidden layers are nodes; interventions on them over a class's images measure their causal effect on the class score;
filters whose effect is significant are kept and linked across layers by path interventions. The paper has no public
code; where it leaves choices open we made these (each is a parameter or stated here):

- an intervention ``do(filter := fill)`` replaces a filter's whole map by zeros (or a given mean), through the same
  :class:`~lit_xai.channel_masking.ChannelMask` every channel game uses; its effect on image ``i`` is
  ``v_i(clean) - v_i(do)`` on the target logit (``link``);
- significance: a one-sided one-sample t-test over the class's images (the filter *supports* the class: removing it
  lowers the score), with the Benjamini-Hochberg false discovery rate controlled at ``alpha`` over all filters of all
  layers tested; a filter whose effect is zero on every image is never significant;
- edges join kept filters of consecutive layers (in the order given, input to output). The path effect of ``f`` (layer
  ``l``) through ``g`` (the next layer) is how much of ``f``'s effect disappears when ``g`` is held at its clean
  value while ``f`` is intervened on: ``v(do f, g held) - v(do f)``; the edge is kept when that effect is
  significant by the same test (BH over all candidate edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from scipy import stats
from torch import Tensor, nn

from lit_xai.channel_masking import ChannelGroups, ChannelMask
from lit_xai.layers import forward_to_layer, resolve_layer
from lit_xai.links import get_link

__all__ = ["CausalGraph", "benjamini_hochberg", "build_causal_graph", "intervened_scores", "one_sided_t_test"]


def one_sided_t_test(effects: Tensor) -> tuple[Tensor, Tensor]:
    """Per column of ``effects`` ``(n, m)``: the mean and the p-value of ``H1: mean > 0`` (one-sample t-test).

    Columns that are constant get p = 0 when their value is positive and p = 1 otherwise (no noise to test).
    """
    n = effects.shape[0]
    if n < 2:
        raise ValueError(f"a t-test over images needs at least 2 images of the class, got {n}")
    effects = effects.double()
    mean, std = effects.mean(0), effects.std(0)
    p_values = []
    for m, s in zip(mean.tolist(), std.tolist()):
        if s <= 1e-12 * max(abs(m), 1e-30):
            p_values.append(0.0 if m > 0 else 1.0)
        else:
            p_values.append(float(stats.t.sf(m / (s / math.sqrt(n)), n - 1)))
    return mean, torch.tensor(p_values, dtype=torch.float64)


def benjamini_hochberg(p_values: Tensor, alpha: float) -> Tensor:
    """Which hypotheses are rejected with the false discovery rate controlled at ``alpha`` (Benjamini & Hochberg,
    1995): the largest ``k`` with ``p_(k) <= k alpha / m`` and every smaller p-value."""
    m = p_values.numel()
    if m == 0:
        return torch.zeros(0, dtype=torch.bool)
    order = p_values.argsort()
    passed = p_values[order] <= alpha * torch.arange(1, m + 1, dtype=torch.float64) / m
    rejected = torch.zeros(m, dtype=torch.bool)
    if bool(passed.any()):
        last = int(passed.nonzero().max())
        rejected[order[: last + 1]] = True
    return rejected


@dataclass
class CausalGraph:
    """A class's causal explanatory graph.

    Attributes:
        target: the class.
        layers: the layers, input to output.
        effects: per layer, the mean effect of removing each filter ``(C_l,)``.
        p_values: per layer, each filter's p-value ``(C_l,)``.
        nodes: per layer, the kept (causal) filters, most effective first.
        edges: ``(layer_a, filter_a, layer_b, filter_b, mean path effect, p-value)`` for kept edges.
        num_images: images of the class the graph was built on.
    """

    target: int
    layers: list[str]
    effects: dict[str, Tensor]
    p_values: dict[str, Tensor]
    nodes: dict[str, list[int]]
    edges: list[tuple[str, int, str, int, float, float]] = field(default_factory=list)
    num_images: int = 0


def intervened_scores(model, masker, x, keep, link, target, batch_size, hold=None) -> Tensor:
    """``link(model(x with the channels outside keep filled))[target]`` per image and row of ``keep``: ``(B, N)``.

    ``hold = (module, clean, channel, dim)`` also keeps that channel of ``module``'s output at its clean value
    (``clean`` holds the module's clean output for every image of ``x``): a path intervention.
    """
    out = []
    with torch.no_grad():
        for row in keep:
            values = []
            for start in range(0, len(x), batch_size):
                chunk = x[start : start + batch_size]
                handle = None
                if hold is not None:
                    module, clean, channel, dim = hold
                    handle = module.register_forward_hook(
                        _holder(clean[start : start + len(chunk)], channel, dim)
                    )
                try:
                    logits = masker(model, chunk, row.expand(len(chunk), -1))
                finally:
                    if handle is not None:
                        handle.remove()
                values.append(link(logits)[:, target])
            out.append(torch.cat(values))
    return torch.stack(out, dim=1)


def _holder(clean: Tensor, channel: int, dim: int):
    """A forward hook that puts ``channel`` (along ``dim``) of the output back to its clean value."""

    def hook(module, args, output):
        index = [slice(None)] * output.dim()
        index[dim] = channel
        held = output.clone()
        held[tuple(index)] = clean[tuple(index)]
        return held

    return hook


def _channels(model: nn.Module, layer: str, x: Tensor) -> int:
    with torch.no_grad():
        activation = forward_to_layer(model, resolve_layer(model, layer), x[:1])
    return activation.shape[-1 if activation.dim() == 3 else 1]


def build_causal_graph(
    model: nn.Module,
    layers: Sequence[str],
    x: Tensor,
    target: int,
    alpha: float = 0.05,
    fill: str | float | Tensor = "zeros",
    mean: dict[str, Tensor] | None = None,
    link: str | Callable[[Tensor], Tensor] = "logits",
    batch_size: int = 256,
) -> CausalGraph:
    """Build the causal explanatory graph of class ``target`` from its images ``x``.

    Args:
        model: the network (eval mode).
        layers: names of the hidden layers, from input to output.
        x: images of the class ``(n, ...)`` (at least 2).
        target: the class.
        alpha: false discovery rate of the node and edge tests.
        fill: the intervened value: ``"zeros"`` or ``"mean"`` (then ``mean[layer]`` per layer), as in
            :class:`~lit_xai.channel_masking.ChannelMask`.
        link: the explained score from the logits.
        batch_size: images per forward pass.

    Cost: one pass per filter of every layer for the nodes, and one per pair of kept filters in consecutive layers
    for the edges, each over the ``n`` images.
    """
    if len(layers) == 0:
        raise ValueError("pass at least one layer name, from input to output")
    link_fn = get_link(link)
    layers = list(layers)
    maskers, effects, p_values, all_p = {}, {}, {}, []
    with torch.no_grad():
        clean = link_fn(model(x))[:, target]
    for layer in layers:
        channels = _channels(model, layer, x)
        layer_mean = None if mean is None else mean[layer]
        maskers[layer] = ChannelMask(ChannelGroups(channels), layer, fill=fill, mean=layer_mean)
        keep = ~torch.eye(channels, dtype=torch.bool, device=x.device)  # row f: every filter but f
        removed = intervened_scores(model, maskers[layer], x, keep, link_fn, target, batch_size)
        effects[layer], p_values[layer] = one_sided_t_test(clean.unsqueeze(1) - removed)
        all_p.append(p_values[layer])
    rejected = benjamini_hochberg(torch.cat(all_p), alpha).split([len(p) for p in all_p])
    nodes = {}
    for layer, kept in zip(layers, rejected):
        order = effects[layer][kept].argsort(descending=True)
        nodes[layer] = kept.nonzero().squeeze(1)[order].tolist()
    graph = CausalGraph(target, layers, effects, p_values, nodes, num_images=len(x))
    graph.edges = _edges(model, graph, maskers, x, link_fn, alpha, batch_size)
    return graph


def _edges(model, graph: CausalGraph, maskers, x, link, alpha, batch_size) -> list:
    """Path interventions between kept filters of consecutive layers, tested together (BH)."""
    candidates, path_effects = [], []
    for layer_a, layer_b in zip(graph.layers, graph.layers[1:]):
        if not graph.nodes[layer_a] or not graph.nodes[layer_b]:
            continue
        module_b = resolve_layer(model, layer_b)
        with torch.no_grad():
            chunks = [
                forward_to_layer(model, module_b, x[s : s + batch_size]) for s in range(0, len(x), batch_size)
            ]
        clean_b = torch.cat(chunks)
        masker_a = maskers[layer_a]
        dim_b = maskers[layer_b].channel_axis(clean_b)
        for f in graph.nodes[layer_a]:
            keep = torch.ones(1, masker_a.num_players, dtype=torch.bool, device=x.device)
            keep[0, f] = False
            intervened = intervened_scores(model, masker_a, x, keep, link, graph.target, batch_size)[:, 0]
            for g in graph.nodes[layer_b]:
                hold = (module_b, clean_b, g, dim_b)
                values = intervened_scores(model, masker_a, x, keep, link, graph.target, batch_size, hold)[
                    :, 0
                ]
                candidates.append((layer_a, f, layer_b, g))
                path_effects.append(values - intervened)
    if not candidates:
        return []
    mean, p = one_sided_t_test(torch.stack(path_effects, dim=1))
    rejected = benjamini_hochberg(p, alpha)
    return [
        (*candidate, float(m), float(q))
        for candidate, m, q, keep in zip(candidates, mean, p, rejected)
        if keep
    ]
