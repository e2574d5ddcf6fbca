"""Explanation vs prediction (Karimi, Muandet, Kornblith, Schölkopf & Kim, "On the Relationship Between Explanation
and Prediction: A Causal View", ICML 2023, arXiv 2212.06925) on a zoo of small digits MLPs.

The zoo. A seeded random sample of hyperparameters, drawn independently of each other (so each is a randomised
treatment: no confounding between them), over the ranges of the Unterthiner et al. (2020) CNN zoo the paper
analyses: optimiser (SGD, Adam, RMSprop), learning rate (log-uniform 1e-4..1e-1), weight decay (log-uniform
1e-8..1e-2), dropout (uniform 0..0.7), train fraction (0.1, 0.25, 0.5, 1.0 of the training split) and
seed (initialisation, data order and which training digits are kept). Each model is an MLP 64-64-64-10 (dropout
after each hidden layer) trained for a fixed number of epochs by ``ClassifierModule`` (the project's classifier,
with the sampled optimiser at a constant learning rate) in one quiet Lightning run, on the digits of
``DigitsDataModule`` (pixels in [0, 1], blank background 0). The paper's zoo holds CNNs; an MLP is used because
exact Shapley values cost 2^16 forward passes per probe digit, and on one CPU thread a SmallCNN (8/16 channels)
forward pass on 8x8 images was ~15x slower than this MLP's (4.5 s vs 0.3 s per 65,536 images, measured in one
run), which would not fit 100 models in the hour.

Y and E. On a fixed probe set of held-out digits, Y is the model's prediction (its softmax vector per digit) and
E its explanation of its own predicted class on the 16 players of a 2x2 patch grid, by four methods: gradient
(magnitude), integrated gradients (zero baseline), SmoothGrad and exact Shapley values (2^16 coalitions per
digit, zero fill, softmax probabilities, :func:`lit_xai.ground_truth.shapley_ground_truth`). Accuracy is measured
on all held-out digits. Each finished model's row is appended to ``benchmarks/results/e_vs_y_models.jsonl`` (a
stopped run resumes where it stopped and nothing finished is lost).

The analysis (:mod:`lit_xai.mediation`). The paper intervenes on hyperparameters and measures treatment effects on
Y and on E and Y's direct influence on E, by performance bucket; its method section (which distances, which
estimator) could not be consulted here, so the representation is our choice, made to follow that design. Every
pair of models in a bin is a unit: its treatment is the vector of hyperparameter differences, its outcomes d_Y (mean
total-variation distance between the two models' softmax vectors on the probe digits: bounded, and zero exactly
when the predictions agree) and d_E (mean cosine distance between their maps: blind to a map's scale, which grows
with a model's confidence without the map meaning anything else). A linear mediation model on the pairs gives, per
hyperparameter, the total effect on E, its direct part and the part through Y; the headline is Y's direct influence
on E, the partial correlation of d_E and d_Y with the hyperparameter differences held fixed (scale-free, so the
accuracy tertiles, whose spreads of d_Y differ, compare), with 95 % intervals from a bootstrap over the models.
``--analyse-only`` recomputes everything from the JSONL without training.

    OMP_NUM_THREADS=1 python -m benchmarks.e_vs_y                  # the zoo (18 min on one shared core)
    OMP_NUM_THREADS=1 python -m benchmarks.e_vs_y --analyse-only   # the analysis only (about a minute)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import RESULTS, environment, print_table, quiet_trainer, write_json
from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.attribution import build_attribution
from lit_xai.data.digits import DigitsDataModule
from lit_xai.ground_truth import shapley_ground_truth
from lit_xai.io import atomic_open
from lit_xai.masking import BaselineFill
from lit_xai.mediation import (
    MediationResult,
    bootstrap_pairwise_mediation,
    mean_cosine_distance,
    mean_total_variation,
    pairwise_mediation,
)
from lit_xai.metrics.functional._utils import rankdata
from lit_xai.players import PatchGrid

MODELS_FILE = RESULTS / "e_vs_y_models.jsonl"
OPTIMISERS = ("sgd", "adam", "rmsprop")
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
METHODS = {
    "gradient": {},
    "integrated_gradients": {"steps": 32},
    "smoothgrad": {"num_samples": 50},
}
HIDDEN = (64, 64)


class ZooClassifier(ClassifierModule):
    """``ClassifierModule`` with the zoo's optimiser at a constant learning rate (the Unterthiner zoo has no schedule).

    Args:
        optimiser: ``"sgd"``, ``"adam"`` or ``"rmsprop"``.
        dropout: dropout after each hidden layer of the MLP.
        **kwargs: ``lr``, ``weight_decay`` and the rest of :class:`ClassifierModule`.
    """

    def __init__(self, optimiser: str = "adam", dropout: float = 0.0, **kwargs: Any) -> None:
        if optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {optimiser!r}")
        backbone_kwargs = {"in_features": 64, "hidden": HIDDEN, "dropout": dropout}
        super().__init__(backbone="mlp", num_classes=10, backbone_kwargs=backbone_kwargs, **kwargs)
        self.optimiser = optimiser

    def configure_optimizers(self):
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[
            self.optimiser
        ]
        return cls(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def sample_zoo(num_models: int, seed: int = 0) -> list[dict[str, Any]]:
    """``num_models`` hyperparameter settings, each drawn independently (a seeded random sample, not a grid)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    zoo = []
    for index in range(num_models):
        zoo.append(
            {
                "index": index,
                "optimiser": OPTIMISERS[int(torch.randint(len(OPTIMISERS), (), generator=generator))],
                "lr": 10 ** uniform(-4.0, -1.0),
                "weight_decay": 10 ** uniform(-8.0, -2.0),
                "dropout": uniform(0.0, 0.7),
                "train_fraction": TRAIN_FRACTIONS[
                    int(torch.randint(len(TRAIN_FRACTIONS), (), generator=generator))
                ],
                "seed": int(torch.randint(2**31 - 1, (), generator=generator)),
            }
        )
    return zoo


def digits_data(num_probe: int) -> dict[str, Any]:
    """The training dataset, all held-out digits (validation + test splits) and the fixed probe digits."""
    data = DigitsDataModule(normalize=False, seed=0)
    data.setup("fit")
    held_x = torch.cat([data.val_dataset.inputs, data.test_dataset.inputs])
    held_y = torch.cat([data.val_dataset.targets, data.test_dataset.targets])
    probe = torch.randperm(len(data.test_dataset), generator=torch.Generator().manual_seed(0))[:num_probe]
    return {
        "train": data.train_dataset,
        "held_x": held_x,
        "held_y": held_y,
        "probe_x": data.test_dataset.inputs[probe],
        "probe_y": data.test_dataset.targets[probe],
    }


def train_model(config: dict[str, Any], train_dataset, epochs: int) -> torch.nn.Module:
    """One Lightning run (no logger, checkpoints or progress bar); returns the trained network in eval mode."""
    torch.manual_seed(config["seed"])
    keep = torch.randperm(len(train_dataset))[: max(1, round(config["train_fraction"] * len(train_dataset)))]
    loader = DataLoader(Subset(train_dataset, keep.tolist()), batch_size=64, shuffle=True)
    module = ZooClassifier(
        optimiser=config["optimiser"],
        dropout=config["dropout"],
        lr=config["lr"],
        weight_decay=config["weight_decay"],
    )
    trainer = quiet_trainer(epochs, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    return module.model.eval()


def explain(model: torch.nn.Module, data: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, Y (probe softmax) and E (each method's player values for the predicted class) of one model."""
    players = PatchGrid(8, 2)
    with torch.no_grad():
        accuracy = float((model(data["held_x"]).argmax(1) == data["held_y"]).float().mean())
        probs = model(data["probe_x"]).softmax(-1)
    target = probs.argmax(1)
    explanations = {
        name: build_attribution(name, model, players, **kwargs).attribute(data["probe_x"], target)
        for name, kwargs in METHODS.items()
    }
    explanations["shapley"] = shapley_ground_truth(
        model, BaselineFill(players), data["probe_x"], target, estimator="exact", link="softmax"
    )
    return {
        "accuracy": accuracy,
        "probe_accuracy": float((target == data["probe_y"]).float().mean()),
        "y": probs,
        "e": explanations,
    }


def rounded(values: torch.Tensor) -> list:
    """Six significant digits: enough for distances, a quarter of the file of full float64 text."""
    return [[float(f"{v:.6g}") for v in row] for row in values.tolist()]


def finished_indices(path: Path) -> set[int]:
    """Models already in the JSONL (a half-written last line, from a kill mid-write, is ignored and redone)."""
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                done.add(json.loads(line)["config"]["index"])
            except (json.JSONDecodeError, KeyError):
                continue
    return done


def run_zoo(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    data = digits_data(args.num_probe)
    zoo = sample_zoo(args.num_models, args.zoo_seed)[args.first : args.last]
    done = finished_indices(args.models_file)
    args.models_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for config in zoo:
        if config["index"] in done:
            continue
        began = time.perf_counter()
        model = train_model(config, data["train"], args.epochs)
        trained = time.perf_counter()
        result = explain(model, data)
        row = {
            "config": config,
            "epochs": args.epochs,
            "accuracy": result["accuracy"],
            "probe_accuracy": result["probe_accuracy"],
            "y": rounded(result["y"]),
            "e": {name: rounded(values) for name, values in result["e"].items()},
            "seconds": {"train": trained - began, "explain": time.perf_counter() - trained},
        }
        with open(
            args.models_file, "a"
        ) as handle:  # one line per model, flushed at once: a kill loses only it
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        print(
            f"model {config['index']:3d} {config['optimiser']:7s} lr {config['lr']:.1e} frac "
            f"{config['train_fraction']:.2f} acc {result['accuracy']:.3f} train {row['seconds']['train']:.1f}s "
            f"explain {row['seconds']['explain']:.1f}s total {time.perf_counter() - start:.0f}s",
            flush=True,
        )


# ---- the mediation analysis -------------------------------------------------------------------------------------

#: How each hyperparameter enters a pair's treatment: name, the scale its difference is taken on, categorical or not.
HYPERPARAMETERS = (
    ("optimiser", "differs", True),
    ("lr", "decades", False),
    ("weight_decay", "decades", False),
    ("dropout", "absolute", False),
    ("train_fraction", "doublings", False),
)
BINS = ("low", "mid", "high")


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["config"]["index"]] = row
    return [rows[i] for i in sorted(rows)]


def hyperparameter_matrix(rows: list[dict[str, Any]]) -> torch.Tensor:
    """``(m, 5)``: optimiser code, log10 lr, log10 weight decay, dropout, log2 train fraction."""
    return torch.tensor(
        [
            [
                OPTIMISERS.index(r["config"]["optimiser"]),
                math.log10(r["config"]["lr"]),
                math.log10(r["config"]["weight_decay"]),
                r["config"]["dropout"],
                math.log2(r["config"]["train_fraction"]),
            ]
            for r in rows
        ],
        dtype=torch.float64,
    )


def accuracy_bins(accuracy: torch.Tensor) -> dict[str, torch.Tensor]:
    """Model indices of the accuracy tertiles (sorted by accuracy, split into three near-equal groups)."""
    order = accuracy.argsort(stable=True)
    return dict(zip(BINS, order.tensor_split(3)))


def summarise(point: MediationResult, draws: list[MediationResult]) -> dict[str, Any]:
    """Point estimates with 95 % percentile intervals over the bootstrap draws."""

    def interval(values: torch.Tensor) -> list[float]:
        finite = values[values.isfinite()]
        return (
            [float(finite.quantile(0.025)), float(finite.quantile(0.975))]
            if finite.numel()
            else [math.nan] * 2
        )

    out: dict[str, Any] = {"num_pairs": point.num_units}
    for field in ("partial_correlation", "standardized_mediator_to_outcome", "mediator_to_outcome"):
        values = torch.tensor([getattr(d, field) for d in draws], dtype=torch.float64)
        out[field] = {"estimate": getattr(point, field), "ci95": interval(values)}
    for field in ("total", "direct", "indirect", "on_mediator"):
        stacked = torch.stack([getattr(d, field) for d in draws])
        out[field] = {
            name: {"estimate": float(getattr(point, field)[k]), "ci95": interval(stacked[:, k])}
            for k, (name, _, _) in enumerate(HYPERPARAMETERS)
        }
    out["seed_effect"] = {  # the intercepts: two models that differ only in their seed
        "on_y": point.intercepts["on_mediator"],
        "total_on_e": point.intercepts["total"],
        "direct_on_e": point.intercepts["direct"],
    }
    return out


def analyse(rows: list[dict[str, Any]], num_resamples: int, seed: int = 0) -> dict[str, Any]:
    """The mediation analysis of every method, on the whole zoo and in each accuracy tertile."""
    categorical = [flag for _, _, flag in HYPERPARAMETERS]
    h = hyperparameter_matrix(rows)
    accuracy = torch.tensor([r["accuracy"] for r in rows], dtype=torch.float64)
    d_y = mean_total_variation(torch.tensor([r["y"] for r in rows], dtype=torch.float64))
    methods = list(rows[0]["e"])
    d_e = {
        m: mean_cosine_distance(torch.tensor([r["e"][m] for r in rows], dtype=torch.float64)) for m in methods
    }
    groups = {"all": torch.arange(len(rows)), **accuracy_bins(accuracy)}
    result: dict[str, Any] = {
        "bins": {
            name: {
                "num_models": len(idx),
                "accuracy_min": float(accuracy[idx].min()),
                "accuracy_max": float(accuracy[idx].max()),
                "accuracy_mean": float(accuracy[idx].mean()),
                "mean_d_y": float(d_y[idx][:, idx].sum() / max(1, len(idx) * (len(idx) - 1))),
            }
            for name, idx in groups.items()
        },
        "methods": {},
    }
    for method in methods:
        per_group, partial_draws = {}, {}
        for name, idx in groups.items():
            sub = (h[idx], categorical, d_y[idx][:, idx], d_e[method][idx][:, idx])
            point = pairwise_mediation(*sub)
            generator = torch.Generator().manual_seed(seed)
            draws = bootstrap_pairwise_mediation(*sub, num_resamples=num_resamples, generator=generator)
            per_group[name] = summarise(point, draws)
            per_group[name]["mean_d_e"] = float(
                d_e[method][idx][:, idx].sum() / max(1, len(idx) * (len(idx) - 1))
            )
            partial_draws[name] = torch.tensor([d.partial_correlation for d in draws], dtype=torch.float64)
        # Independent bins: the r-th draws of two bins pair up into a draw of their difference.
        differences = {}
        for first, second in (("low", "mid"), ("mid", "high")):
            diff = partial_draws[first] - partial_draws[second]
            estimate = per_group[first]["partial_correlation"]["estimate"]
            estimate -= per_group[second]["partial_correlation"]["estimate"]
            differences[f"{first}_minus_{second}"] = {
                "estimate": estimate,
                "ci95": [float(diff.quantile(0.025)), float(diff.quantile(0.975))],
                "share_of_draws_above_zero": float((diff > 0).double().mean()),
            }
        low, mid, high = (per_group[b]["partial_correlation"]["estimate"] for b in BINS)
        result["methods"][method] = {
            "groups": per_group,
            "differences": differences,
            "paper_pattern_point_estimates": bool(low > mid and high < mid),
            "paper_pattern_resolved": bool(
                differences["low_minus_mid"]["ci95"][0] > 0 and differences["mid_minus_high"]["ci95"][0] > 0
            ),
        }
    result["robustness"] = robustness(rows, h, accuracy)
    return result


def rank_distance(explanations: torch.Tensor) -> torch.Tensor:
    """``(m, m)`` mean over inputs of ``1 - Spearman`` between the units' maps ``(m, P, d)`` (ties share ranks)."""
    ranks = rankdata(explanations)
    return mean_cosine_distance(ranks - ranks.mean(-1, keepdim=True))  # cosine of centred ranks is Spearman


def robustness(rows: list[dict[str, Any]], h: torch.Tensor, accuracy: torch.Tensor) -> dict[str, Any]:
    """Y's direct influence on E (partial correlation, point estimates) under other choices than the headline's.

    The distances are our choice, not the paper's (which could not be consulted), and the low tertile is mostly
    untrained models; so the pattern is also read with the prediction distance as the share of probe digits whose
    predicted class differs, with the explanation distance as ``1 - Spearman``, and in accuracy quartiles.
    """
    categorical = [flag for _, _, flag in HYPERPARAMETERS]
    probs = torch.tensor([r["y"] for r in rows], dtype=torch.float64)
    labels = probs.argmax(-1)
    distances_y = {
        "total_variation": mean_total_variation(probs),
        "disagreement": (labels.unsqueeze(1) != labels.unsqueeze(0)).double().mean(-1),
    }
    maps = {m: torch.tensor([r["e"][m] for r in rows], dtype=torch.float64) for m in rows[0]["e"]}
    distances_e = {"cosine": mean_cosine_distance, "one_minus_spearman": rank_distance}
    order = accuracy.argsort(stable=True)
    binnings = {
        "tertiles": dict(zip(BINS, order.tensor_split(3))),
        "quartiles": dict(zip("1234", order.tensor_split(4))),
    }
    out: dict[str, Any] = {}
    for y_name, d_y in distances_y.items():
        for e_name, distance in distances_e.items():
            for bin_name, groups in binnings.items():
                if (y_name, e_name, bin_name) == ("total_variation", "cosine", "tertiles"):
                    continue  # the headline, with intervals, above
                key = f"d_y={y_name}, d_e={e_name}, {bin_name}"
                out[key] = {}
                for method, values in maps.items():
                    d_e = distance(values)
                    out[key][method] = {
                        name: pairwise_mediation(
                            h[idx], categorical, d_y[idx][:, idx], d_e[idx][:, idx]
                        ).partial_correlation
                        for name, idx in groups.items()
                    }
    return out


def save_figure(path: Path, analysis: dict[str, Any]) -> None:
    """Top: Y's direct influence on E (partial correlation) per accuracy tertile and method, with 95 % intervals.
    Bottom: per method, each hyperparameter's direct and indirect (through Y) effect on E in each tertile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(analysis["methods"])
    fig = plt.figure(figsize=(3.2 * len(methods), 7.0))
    grid = fig.add_gridspec(2, len(methods))
    top = fig.add_subplot(grid[0, :])
    for offset, method in enumerate(methods):
        groups = analysis["methods"][method]["groups"]
        x = [i + 0.08 * (offset - len(methods) / 2) for i in range(len(BINS))]
        estimate = [groups[b]["partial_correlation"]["estimate"] for b in BINS]
        low = [e - groups[b]["partial_correlation"]["ci95"][0] for e, b in zip(estimate, BINS)]
        high = [groups[b]["partial_correlation"]["ci95"][1] - e for e, b in zip(estimate, BINS)]
        top.errorbar(x, estimate, yerr=[low, high], marker="o", capsize=3, label=method)
    labels = [
        f"{b}\nacc {analysis['bins'][b]['accuracy_min']:.2f}-{analysis['bins'][b]['accuracy_max']:.2f}"
        for b in BINS
    ]
    top.set_xticks(range(len(BINS)), labels)
    top.set_ylabel("partial corr(d_E, d_Y | Δh)")
    top.set_title(
        "direct influence of the prediction Y on the explanation E, by accuracy tertile", fontsize=10
    )
    top.axhline(0.0, color="grey", linewidth=0.5)
    top.legend(fontsize=8)
    names = [name for name, _, _ in HYPERPARAMETERS]
    for column, method in enumerate(methods):
        ax = fig.add_subplot(grid[1, column])
        groups = analysis["methods"][method]["groups"]
        width = 0.13  # six bars per hyperparameter: direct and via Y, for each tertile
        for k, b in enumerate(BINS):
            for part, (field, hatch, alpha) in enumerate((("direct", None, 0.9), ("indirect", "//", 0.4))):
                x = [i + (2 * k + part - 2.5) * width for i in range(len(names))]
                values = [groups[b][field][n]["estimate"] for n in names]
                label = f"{b}: {'direct' if part == 0 else 'via Y'}"
                ax.bar(x, values, width, color=f"C{k}", alpha=alpha, hatch=hatch, label=label)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_title(f"{method}: effect on d_E per unit Δh", fontsize=9)
        if column == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


def report(args: argparse.Namespace) -> None:
    rows = load_rows(args.models_file)
    if len(rows) < 12:
        raise SystemExit(
            f"{args.models_file} has {len(rows)} models; the analysis needs at least 12 (4 per tertile)"
        )
    start = time.perf_counter()
    analysis = analyse(rows, args.resamples)
    accuracy = [r["accuracy"] for r in rows]
    payload = {
        "description": __doc__.splitlines()[0],
        "num_models": len(rows),
        "epochs": rows[0]["epochs"],
        "num_probe": len(rows[0]["y"]),
        "accuracy": {
            "min": min(accuracy),
            "median": float(torch.tensor(accuracy).median()),
            "max": max(accuracy),
        },
        "hyperparameters": {name: scale for name, scale, _ in HYPERPARAMETERS},
        "representation": {
            "d_y": "mean over probe digits of the total-variation distance between two models' softmax vectors",
            "d_e": "mean over probe digits of 1 - cosine between two models' 16 player values (predicted class)",
        },
        "headline": "partial_correlation: corr(d_E, d_Y | hyperparameter differences), Y's direct influence on E",
        "bootstrap_resamples": args.resamples,
        "zoo_seconds": {
            "train": sum(r["seconds"]["train"] for r in rows),
            "explain": sum(r["seconds"]["explain"] for r in rows),
        },
        "analysis_seconds": time.perf_counter() - start,
        **analysis,
        "environment": environment(),
    }
    write_json("e_vs_y", payload)
    save_figure(RESULTS / "e_vs_y.png", analysis)
    table = []
    for method, result in analysis["methods"].items():
        for name in ("all", *BINS):
            group = result["groups"][name]
            partial = group["partial_correlation"]
            table.append(
                {
                    "method": method,
                    "bin": name,
                    "models": analysis["bins"][name]["num_models"],
                    "accuracy": f"{analysis['bins'][name]['accuracy_min']:.2f}-"
                    f"{analysis['bins'][name]['accuracy_max']:.2f}",
                    "partial_r(E,Y|H)": partial["estimate"],
                    "ci95": f"[{partial['ci95'][0]:.2f}, {partial['ci95'][1]:.2f}]",
                    "b_std": group["standardized_mediator_to_outcome"]["estimate"],
                    "mean_d_E": group["mean_d_e"],
                    "lr_total": group["total"]["lr"]["estimate"],
                    "lr_direct": group["direct"]["lr"]["estimate"],
                    "lr_via_Y": group["indirect"]["lr"]["estimate"],
                }
            )
    print_table(table, list(table[0]))
    print()
    verdict = []
    for method, result in analysis["methods"].items():
        d = result["differences"]
        verdict.append(
            {
                "method": method,
                "low-mid": d["low_minus_mid"]["estimate"],
                "low-mid ci95": "[{:.2f}, {:.2f}]".format(*d["low_minus_mid"]["ci95"]),
                "mid-high": d["mid_minus_high"]["estimate"],
                "mid-high ci95": "[{:.2f}, {:.2f}]".format(*d["mid_minus_high"]["ci95"]),
                "pattern (point)": result["paper_pattern_point_estimates"],
                "pattern (ci)": result["paper_pattern_resolved"],
            }
        )
    print(
        "paper's pattern: Y's direct influence on E higher in the low tertile than the mid, lower in the high"
    )
    print_table(verdict, list(verdict[0]))
    print()
    print("robustness: partial r(E, Y | H) per bin (low to high accuracy) under other distances and bins")
    other = []
    for key, methods in analysis["robustness"].items():
        for method, bins in methods.items():
            values = {f"bin {k + 1}": v for k, v in enumerate(bins.values())}  # low to high accuracy
            other.append({"choice": key, "method": method, **values})
    print_table(other, list(dict.fromkeys(k for row in other for k in row)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-models", type=int, default=100)
    parser.add_argument("--zoo-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-probe", type=int, default=16)
    parser.add_argument("--first", type=int, default=0, help="train only models first..last-1 of the sample")
    parser.add_argument("--last", type=int, default=None)
    parser.add_argument("--models-file", type=Path, default=MODELS_FILE)
    parser.add_argument("--analyse-only", action="store_true", help="skip training; analyse the JSONL")
    parser.add_argument(
        "--resamples", type=int, default=200, help="bootstrap resamples of the models per bin"
    )
    args = parser.parse_args()
    if not args.analyse_only:
        run_zoo(args)
    report(args)


if __name__ == "__main__":
    main()
