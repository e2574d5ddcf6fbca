"""Causal explanatory graphs on decoy digits: is the decoy in the plain model's graph and not in RRR's? Are the
causal explanations more stable under input noise than GradCAM? (issue 17's third benchmark)

Ahmad et al. (arXiv 2305.08950) claim that explanations through a class's causal filters are more robust than
attribution baselines. Here two SmallCNNs (16 and 32 channels) are trained on decoy digits (a corner patch whose grey
level reveals the label in training, random at test; Ross et al. 2017) with the repository's configs, the backbone
switched to the CNN: plain cross-entropy (``baseline.yaml``) and RRR (``rrr.yaml``). For each model and class a causal
graph is built at ``stem.2`` (16 channels, 16x16) and ``features`` (32 channels, 8x8) from ``--graph-images`` training
images of the class (decoyed, as in training).

- Decoy response of a filter: ``mean |A_f(x) - A_f(x without the patch)| / mean |A_f(x)|`` over those images (the
  patch is removed by zeroing everything outside the digit box, the background being exactly zero). Reported: how
  many of each graph's causal filters respond above ``--decoy-threshold``.
- Stability: Pearson correlation between a map of ``x`` and of ``x + N(0, sigma^2)`` (3 draws), on decoy test
  images, for :class:`~lit_xai.algorithms.causal_graph.CausalFilterExplainer` and GradCAM at ``features``; with
  their deletion AUC (to zeros, 2x2 players) and localisation in the digit box, target = label.

``python -m benchmarks.causal_graph`` writes ``benchmarks/results/causal_graph.json`` and the class-0 graph of each
model, ``causal_graph_{baseline,rrr}_class0.png``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, command_line, environment, write_json  # noqa: E402
from benchmarks.input_iba import score  # noqa: E402
from benchmarks.supervision import CONFIGS, accuracy, build, fit, read_config, test_tensors  # noqa: E402
from lit_xai.algorithms.causal_graph import (  # noqa: E402
    CausalFilterExplainer,
    build_causal_graph,
    plot_causal_graph,
)
from lit_xai.attribution import GradCAM  # noqa: E402
from lit_xai.layers import forward_to_layer, resolve_layer  # noqa: E402
from lit_xai.players import PatchGrid  # noqa: E402

LAYERS = ["stem.2", "features"]
CNN = {"backbone": "cnn", "backbone_kwargs": {"in_chans": 1, "channels": [16, 32]}}


def train(method: str, epochs: int, seed: int = 0):
    config = read_config(CONFIGS / "decoy_digits" / f"{method}.yaml")
    config = copy.deepcopy(config)
    config["model"]["init_args"].update(CNN)
    torch.manual_seed(seed)
    module, datamodule = build(config, seed)
    model = fit(module, datamodule, epochs).requires_grad_(False)
    datamodule.setup("fit")
    train_set = datamodule.train_dataset
    return model, train_set.inputs, train_set.targets, train_set.annotations, test_tensors(datamodule)


@torch.no_grad()
def decoy_response(model, layer: str, x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Per filter: how much its activation changes when the patch is removed, relative to its size, ``(C,)``."""
    module = resolve_layer(model, layer)
    with_patch = forward_to_layer(model, module, x)
    without = forward_to_layer(model, module, x * box.unsqueeze(1))
    change = (with_patch - without).abs().mean(dim=(0, 2, 3))
    return change / with_patch.abs().mean(dim=(0, 2, 3)).clamp_min(1e-8)


def stability(explain, x, target, sigma: float, draws: int = 3) -> float:
    """Mean Pearson correlation between the map of x and the maps of noisy copies."""
    generator = torch.Generator().manual_seed(0)
    clean = explain(x, target).flatten(1)
    values = []
    for _ in range(draws):
        noisy = explain(x + sigma * torch.randn(x.shape, generator=generator), target).flatten(1)
        a, b = clean - clean.mean(1, keepdim=True), noisy - noisy.mean(1, keepdim=True)
        correlation = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
        values.append(correlation)
    return float(torch.stack(values).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--graph-images", type=int, default=40, help="training images per class for each graph"
    )
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--decoy-threshold", type=float, default=0.5)
    args = parser.parse_args()
    start = time.perf_counter()
    results = {}
    for method in ("baseline", "rrr"):
        model, x, y, box, test = train(method, args.epochs)
        tx, ty, tbox = (test[k][: args.num_test] for k in ("input", "target", "annotation"))
        graphs, decoy = {}, {}
        for c in range(10):
            images = x[y == c][: args.graph_images]
            graphs[c] = build_causal_graph(model, LAYERS, images, target=c)
            responses = {
                layer: decoy_response(model, layer, images, box[y == c][: args.graph_images])
                for layer in LAYERS
            }
            decoy[c] = {
                layer: {
                    "causal_filters": len(graphs[c].nodes[layer]),
                    "causal_filters_responding_to_decoy": sum(
                        float(responses[layer][f]) > args.decoy_threshold for f in graphs[c].nodes[layer]
                    ),
                    "filters_responding_to_decoy": int((responses[layer] > args.decoy_threshold).sum()),
                    "mean_response_causal": float(responses[layer][graphs[c].nodes[layer]].mean())
                    if graphs[c].nodes[layer]
                    else None,
                }
                for layer in LAYERS
            }
        plot_causal_graph(graphs[0], RESULTS / f"causal_graph_{method}_class0.png")
        players = PatchGrid(16, 1)
        causal = CausalFilterExplainer(model, players, graphs, layer="features")
        gradcam = GradCAM(model, players, layer="features")
        explainers = {"causal filters": causal.attribute_pixels, "GradCAM": gradcam.attribute_pixels}
        scores = {}
        for name, explain in explainers.items():
            maps = explain(tx, ty).detach()
            scores[name] = {
                "stability": stability(explain, tx, ty, args.sigma),
                **{k: v["mean"] for k, v in score(model, tx, ty, tbox, maps).items()},
            }
        totals = {
            layer: {
                key: sum(decoy[c][layer][key] for c in range(10))
                for key in (
                    "causal_filters",
                    "causal_filters_responding_to_decoy",
                    "filters_responding_to_decoy",
                )
            }
            for layer in LAYERS
        }
        results[method] = {
            "accuracy_decoy_test": accuracy(model, test["input"], test["target"]),
            "decoy_by_class": decoy,
            "decoy_totals": totals,
            "edges_per_class": [len(graphs[c].edges) for c in range(10)],
            "explanations": scores,
        }
        print(method, results[method]["accuracy_decoy_test"], totals, scores, flush=True)
    goals = {
        "decoy_in_plain_graph": sum(
            t["causal_filters_responding_to_decoy"] for t in results["baseline"]["decoy_totals"].values()
        )
        > 0,
        "decoy_not_in_rrr_graph": sum(
            t["causal_filters_responding_to_decoy"] for t in results["rrr"]["decoy_totals"].values()
        )
        == 0,
        **{
            f"{method}_causal_more_stable_than_gradcam": r["explanations"]["causal filters"]["stability"]
            > r["explanations"]["GradCAM"]["stability"]
            for method, r in results.items()
        },
        **{
            f"{method}_causal_deletion_at_most_gradcam": r["explanations"]["causal filters"]["deletion_auc"]
            <= r["explanations"]["GradCAM"]["deletion_auc"]
            for method, r in results.items()
        },
    }
    payload = {
        "description": "causal explanatory graphs of SmallCNNs (plain, RRR) on decoy digits; stability vs GradCAM",
        "command": command_line(),
        "settings": vars(args),
        "layers": LAYERS,
        "results": results,
        "goals": goals,
        "total_wall_seconds": time.perf_counter() - start,
        "environment": environment(),
    }
    print(f"wrote {write_json('causal_graph', payload)}; goals: {goals}")


if __name__ == "__main__":
    main()
