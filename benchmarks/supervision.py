"""Training with explanations: does supervision fix a shortcut, and does saliency-guided training make saliency faithful?

1. **Decoy digits** (Ross, Hughes & Doshi-Velez 2017's Decoy MNIST, on 16x16 padded digits): a plain MLP(50, 30),
   RRR, VisFIS (sufficiency + uncertainty + output invariance + plausibility) and the same MLP trained on clean
   digits. Reported: test accuracy (decoy level randomised at test time; the clean model on clean test digits) and
   plausibility, the relevance mass of ``|input gradient|`` of the true class inside the digit box
   (:func:`lit_xai.metrics.functional.relevance_mass_accuracy`).
   Goals: the plain model loses >= 20 points to the decoy; RRR and VisFIS come within 3 points of the clean model
   and put >= 2x the plain model's attribution mass on the digit.
2. **Saliency-guided training** (Ismail, Corrada Bravo & Feizi 2021) on digits and shapes, against plain training
   of the same CNN: clean test accuracy (goal: within 1 point), accuracy after removing the top 10...90% most salient
   pixels (``|gradient|`` of the true class, replaced by the constant 0, the blank background; no retraining; goal:
   a steeper drop than plain training at 10...50%), and ERASER sufficiency/comprehensiveness of the saliency at
   10/25/50% (:func:`lit_xai.metrics.functional.eraser`, probabilities, same removal).

Every model is built from its training config (``configs/decoy_digits/*.yaml``, ``configs/<dataset>/saliency_guided.yaml``;
the plain baseline is the saliency-guided config with :class:`ClassifierModule`), trained for the config's epochs
with the final weights kept, over 3 seeds (seed = data split, initialisation and noise). Runs are spread over
``--workers`` processes with one thread each (tiny models: one thread per process is fastest on 2 cores).

    python -m benchmarks.supervision [--seeds 0 1 2] [--workers 2] [--parts decoy saliency]

Writes benchmarks/results/supervision.json and benchmarks/results/supervision_{decoy,removal,maps}.png.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import (
    RESULTS,
    environment,
    instantiate,
    print_table,
    quiet_trainer,
    run_jobs,
    write_json,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DECOY_CONFIGS = {"plain": "baseline", "rrr": "rrr", "visfis": "visfis", "clean": "clean"}
SALIENCY_DATASETS = ("digits", "shapes")
# The goal is judged at 10...50%; 1/2/5% show the regime where shapes (whose deciding shape covers 4-10% of the
# image) lose their information.
REMOVAL_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ERASER_FRACTIONS = (0.1, 0.25, 0.5)
REMOVAL_FILL = 0.0  # the blank background of both datasets (digits unnormalised, shapes in [0, 1])
CLASSIFIER_KEYS = ("backbone", "num_classes", "backbone_kwargs", "lr", "weight_decay", "warmup_steps")


def read_config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def build(config: dict[str, Any], seed: int, plain: bool = False, **data_overrides):
    """The module and datamodule of a training config, for one seed (``plain``: the same backbone, plain CE)."""
    if plain:
        from lit_xai.algorithms.classifier import ClassifierModule

        init = config["model"].get("init_args", {})
        module = ClassifierModule(**{k: v for k, v in init.items() if k in CLASSIFIER_KEYS})
    else:
        module = instantiate(config["model"])
    return module, instantiate(config["data"], seed=seed, **data_overrides)


def fit(module, datamodule, epochs: int):
    quiet_trainer(epochs, limit_val_batches=0).fit(module, datamodule)
    return module.model.eval()


def test_tensors(datamodule) -> dict[str, torch.Tensor]:
    datamodule.setup("test")
    dataset = datamodule.test_dataset
    out = {"input": dataset.inputs, "target": dataset.targets}
    if dataset.annotations is not None:
        out["annotation"] = dataset.annotations
    return out


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


def decoy_run(method: str, seed: int) -> dict[str, Any]:
    from lit_xai.attribution.gradients import Gradient
    from lit_xai.metrics.functional import prepare_localization, relevance_mass_accuracy
    from lit_xai.players import PatchGrid

    config = read_config(CONFIGS / "decoy_digits" / f"{DECOY_CONFIGS[method]}.yaml")
    module, datamodule = build(config, seed)
    model = fit(module, datamodule, config["trainer"]["max_epochs"])
    own_test = test_tensors(datamodule)
    # Plausibility is always measured on the decoyed test images, so every model faces the same shortcut.
    _, decoy_dm = build(config, seed, decoy=True)
    decoy_test = test_tensors(decoy_dm)
    x, y, annotation = decoy_test["input"], decoy_test["target"], decoy_test["annotation"]
    players = PatchGrid(tuple(x.shape[-2:]), 1)
    maps = Gradient(model, players).attribute_pixels(x, y)
    mass = relevance_mass_accuracy(*prepare_localization(maps, annotation))
    return {
        "accuracy": accuracy(model, own_test["input"], own_test["target"]),
        "accuracy_decoy_test": accuracy(model, x, y),
        "plausibility": mass.mean().item(),
        "example_maps": maps[:4].tolist() if seed == 0 else None,
        "example_images": x[:4, 0].tolist() if seed == 0 else None,
    }


def removal_curve(model, x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, players) -> list[float]:
    """Accuracy after replacing the top ``f`` most salient players by ``REMOVAL_FILL``, for each fraction ``f``."""
    from lit_xai.masking import BaselineFill

    masker = BaselineFill(players, fill=REMOVAL_FILL)
    order = saliency.argsort(dim=1, descending=True)
    curve = []
    for fraction in REMOVAL_FRACTIONS:
        count = int(fraction * players.num_players)
        keep = torch.ones_like(saliency, dtype=torch.bool).scatter(1, order[:, :count], False)
        with torch.no_grad():
            curve.append((masker(model, x, keep).argmax(-1) == y).float().mean().item())
    return curve


def saliency_run(dataset: str, method: str, seed: int) -> dict[str, Any]:
    from lit_xai.attribution.gradients import Gradient
    from lit_xai.masking import BaselineFill
    from lit_xai.metrics.functional import eraser
    from lit_xai.players import PatchGrid

    config = read_config(CONFIGS / dataset / "saliency_guided.yaml")
    module, datamodule = build(config, seed, plain=method == "plain")
    model = fit(module, datamodule, config["trainer"]["max_epochs"])
    test = test_tensors(datamodule)
    x, y = test["input"], test["target"]
    players = PatchGrid(tuple(x.shape[-2:]), 1)
    saliency = Gradient(model, players).attribute(x, y)
    scores = eraser(model, BaselineFill(players, fill=REMOVAL_FILL), x, saliency, y, ERASER_FRACTIONS)
    return {
        "accuracy": accuracy(model, x, y),
        "removal_accuracy": removal_curve(model, x, y, saliency, players),
        "sufficiency": scores["sufficiency"].mean().item(),
        "comprehensiveness": scores["comprehensiveness"].mean().item(),
    }


def run_task(task: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, Any], float]:
    import lightning as L

    start = time.process_time()
    L.seed_everything(int(task[-1]), verbose=False)
    if task[0] == "decoy":
        result = decoy_run(task[1], int(task[2]))
    else:
        result = saliency_run(task[1], task[2], int(task[3]))
    return task, result, time.process_time() - start


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise_decoy(runs: dict[str, list[dict]]) -> tuple[dict, dict]:
    summary = {
        method: {
            key: mean_std([r[key] for r in results])
            for key in ("accuracy", "accuracy_decoy_test", "plausibility")
        }
        for method, results in runs.items()
    }
    acc = {m: summary[m]["accuracy"]["mean"] * 100 for m in summary}
    mass = {m: summary[m]["plausibility"]["mean"] for m in summary}
    goals = {"plain_drop_at_least_20_points": acc["clean"] - acc["plain"] >= 20}
    for method in ("rrr", "visfis"):
        goals[f"{method}_within_3_points_of_clean"] = acc["clean"] - acc[method] <= 3
        goals[f"{method}_at_least_2x_plain_mass"] = mass[method] >= 2 * mass["plain"]
    return summary, goals


def summarise_saliency(runs: dict[tuple[str, str], list[dict]]) -> tuple[dict, dict]:
    summary: dict[str, dict] = {}
    goals: dict[str, bool] = {}
    for (dataset, method), results in runs.items():
        curves = torch.tensor([r["removal_accuracy"] for r in results])
        summary.setdefault(dataset, {})[method] = {
            **{
                key: mean_std([r[key] for r in results])
                for key in ("accuracy", "sufficiency", "comprehensiveness")
            },
            "removal_accuracy": {
                "fractions": list(REMOVAL_FRACTIONS),
                "mean": curves.mean(0).tolist(),
                "std": (curves.std(0) if len(results) > 1 else torch.zeros(curves.shape[1])).tolist(),
            },
        }
    for dataset, methods in summary.items():
        if {"plain", "saliency_guided"} <= methods.keys():
            plain, guided = methods["plain"], methods["saliency_guided"]
            gap = (plain["accuracy"]["mean"] - guided["accuracy"]["mean"]) * 100
            goals[f"{dataset}_accuracy_within_1_point"] = gap <= 1
            steeper = [
                g < p
                for f, g, p in zip(
                    REMOVAL_FRACTIONS, guided["removal_accuracy"]["mean"], plain["removal_accuracy"]["mean"]
                )
                if 0.1 - 1e-9 <= f <= 0.5 + 1e-9
            ]
            goals[f"{dataset}_steeper_drop_10_to_50"] = all(steeper)
    return summary, goals


def figures(decoy: dict | None, decoy_runs: dict | None, saliency: dict | None) -> list[str]:
    import matplotlib.pyplot as plt

    from lit_xai.viz import curves, explanation_grid, save_figure

    written = []
    if decoy:
        methods = list(decoy)
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, key, label in zip(
            axes, ("accuracy", "plausibility"), ("test accuracy", "relevance mass on digit")
        ):
            means = [decoy[m][key]["mean"] for m in methods]
            stds = [decoy[m][key]["std"] for m in methods]
            ax.bar(
                methods,
                means,
                yerr=stds,
                capsize=4,
                color=["tab:gray", "tab:blue", "tab:orange", "tab:green"],
            )
            ax.set_ylabel(label)
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle("Decoy digits (mean ± std over seeds)", fontsize=9)
        fig.tight_layout()
        written.append(str(save_figure(fig, RESULTS / "supervision_decoy.png")))
        plt.close(fig)
        examples = {m: r[0] for m, r in (decoy_runs or {}).items() if r and r[0].get("example_maps")}
        if examples:
            images = torch.tensor(next(iter(examples.values()))["example_images"]).unsqueeze(1)
            maps = {m: torch.tensor(r["example_maps"]) for m, r in examples.items()}
            fig = explanation_grid(images, maps, path=RESULTS / "supervision_maps.png")
            written.append(str(RESULTS / "supervision_maps.png"))
            plt.close(fig)
    for dataset, methods in (saliency or {}).items():
        series = {m: v["removal_accuracy"]["mean"] for m, v in methods.items()}
        bands = {m: v["removal_accuracy"]["std"] for m, v in methods.items()}
        path = RESULTS / f"supervision_removal_{dataset}.png"
        fig = curves(
            series,
            x=[f * 100 for f in REMOVAL_FRACTIONS],
            xlabel="% most salient pixels removed",
            ylabel="test accuracy",
            title=f"{dataset}: accuracy as salient pixels are removed (steeper = more faithful saliency)",
            path=path,
            bands=bands,
            value_range=(0.0, 1.0),  # accuracies: a ± std band stops at 0 and 1
        )
        written.append(str(path))
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    parser.add_argument("--parts", nargs="+", default=["decoy", "saliency"], choices=["decoy", "saliency"])
    args = parser.parse_args(argv)

    tasks: list[tuple[str, ...]] = []
    if "decoy" in args.parts:
        tasks += [("decoy", m, str(s)) for m in DECOY_CONFIGS for s in args.seeds]
    if "saliency" in args.parts:
        tasks += [
            ("saliency", d, m, str(s))
            for d in SALIENCY_DATASETS
            for m in ("plain", "saliency_guided")
            for s in args.seeds
        ]
    # Longest first, so the two workers finish together.
    tasks.sort(key=lambda t: (t[0] == "saliency" and t[1] == "shapes", t[0] == "decoy" and t[1] == "visfis"))
    tasks.reverse()

    wall = time.perf_counter()
    outputs = list(run_jobs(run_task, [(task,) for task in tasks], args.workers))
    wall = time.perf_counter() - wall

    decoy_runs: dict[str, list[dict]] = {}
    saliency_runs: dict[tuple[str, str], list[dict]] = {}
    cpu_seconds = 0.0
    for task, result, cpu in sorted(outputs, key=lambda o: o[0]):
        cpu_seconds += cpu
        if task[0] == "decoy":
            decoy_runs.setdefault(task[1], []).append(result)
        else:
            saliency_runs.setdefault((task[1], task[2]), []).append(result)
    decoy_runs = {m: decoy_runs[m] for m in DECOY_CONFIGS if m in decoy_runs}

    payload: dict[str, Any] = {"seeds": args.seeds, "environment": environment(), "goals": {}}
    rows = []
    decoy_summary = saliency_summary = None
    if decoy_runs:
        decoy_summary, goals = summarise_decoy(decoy_runs)
        payload["decoy_digits"] = {
            "summary": decoy_summary,
            "runs": {m: [{k: v for k, v in r.items() if not k.startswith("example")} for r in rs]
                     for m, rs in decoy_runs.items()},
        }  # fmt: skip
        payload["goals"].update(goals)
        for method, values in decoy_summary.items():
            rows.append(
                {
                    "part": "decoy_digits",
                    "method": method,
                    "accuracy %": f"{values['accuracy']['mean'] * 100:.1f} ± {values['accuracy']['std'] * 100:.1f}",
                    "relevance mass": f"{values['plausibility']['mean']:.3f} ± {values['plausibility']['std']:.3f}",
                }
            )
    if saliency_runs:
        saliency_summary, goals = summarise_saliency(saliency_runs)
        payload["saliency_guided"] = {
            "summary": saliency_summary,
            "runs": {f"{d}/{m}": rs for (d, m), rs in saliency_runs.items()},
        }
        payload["goals"].update(goals)
        for dataset, methods in saliency_summary.items():
            for method, values in methods.items():
                curve = values["removal_accuracy"]["mean"]
                rows.append(
                    {
                        "part": dataset,
                        "method": method,
                        "accuracy %": f"{values['accuracy']['mean'] * 100:.1f} ± {values['accuracy']['std'] * 100:.1f}",
                        "removed 5/10/30/50/90 %": " ".join(
                            f"{curve[REMOVAL_FRACTIONS.index(f)] * 100:.1f}"
                            for f in (0.05, 0.1, 0.3, 0.5, 0.9)
                        ),
                        "suff ↓": f"{values['sufficiency']['mean']:.3f}",
                        "comp ↑": f"{values['comprehensiveness']['mean']:.3f}",
                    }
                )
    payload["time"] = {"wall_seconds": wall, "cpu_seconds": cpu_seconds, "workers": args.workers}
    payload["figures"] = figures(decoy_summary, decoy_runs, saliency_summary)
    path = write_json("supervision", payload)
    print_table(
        rows,
        ["part", "method", "accuracy %", "relevance mass", "removed 5/10/30/50/90 %", "suff ↓", "comp ↑"],
    )
    print("goals:", {k: ("pass" if v else "FAIL") for k, v in payload["goals"].items()})
    print(f"wall {wall:.0f} s, cpu {cpu_seconds:.0f} s over {args.workers} workers; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
