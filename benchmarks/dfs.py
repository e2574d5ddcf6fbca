"""Does the learned dynamic policy beat static feature rankings? (Covert et al., ICML 2023, Figs. 3-4)

For each dataset (8x8 digits pixel by pixel, digits in 2x2 blocks, breast cancer) and each seed (which also fixes
the data split), train the two stages with the settings of ``configs/dfs/<dataset>{_pretrain,}.yaml``, then
measure test accuracy (and AUROC for breast cancer) after 1..K acquired features for:

- ``dynamic``: the learned policy (argmax choices);
- ``static``: one global ranking by permutation importance of the pre-trained predictor (computed on validation);
- ``static_greedy``: one global order by forward selection on validation (a stronger static order);
- ``random``: an independent random order per test input.

The static and random orders are scored with the jointly trained predictor, the one the policy uses (their scores
with the pre-trained predictor are in the JSON too, and the goals are checked against the better of the two).
Mean ± std over seeds.

    python -m benchmarks.dfs [--datasets digits_pixels digits_patches breast_cancer] [--seeds 0 1 2] [--workers 2]

Writes benchmarks/results/dfs.json and benchmarks/results/dfs.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torchmetrics.functional.classification import binary_auroc  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    environment,
    instantiate,
    print_table,
    quiet_trainer,
    run_jobs,
    write_json,
)
from lit_xai.algorithms.dynamic_selection.baselines import (  # noqa: E402
    evaluate_orders,
    greedy_static_order,
    permutation_importance,
    random_orders,
    ranking,
)
from lit_xai.viz import save_figure  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "dfs"
BUDGETS = {"digits_pixels": 20, "digits_patches": 10, "breast_cancer": 10}
METHODS = ("dynamic", "static", "static_greedy", "random")


def fit(module: L.LightningModule, data: L.LightningDataModule, epochs: int) -> None:
    quiet_trainer(epochs, num_sanity_val_steps=0).fit(module, datamodule=data)
    module.eval()


def scores(logits: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    """Accuracy (and binary AUROC) of ``(N, K + 1, C)`` logits at every budget 0..K."""
    out = {"accuracy": (logits.argmax(-1) == target.unsqueeze(1)).float().mean(0).tolist()}
    if logits.shape[-1] == 2:
        probs = logits.softmax(-1)[..., 1]
        out["auroc"] = [binary_auroc(probs[:, k], target).item() for k in range(logits.shape[1])]
    return out


def run_one(name: str, seed: int, quick: bool = False) -> dict[str, Any]:
    """Train both stages for one dataset and seed, and score every method at budgets 0..K."""
    start, cpu_start = time.perf_counter(), time.process_time()
    L.seed_everything(seed, verbose=False)
    pre_cfg = yaml.safe_load((CONFIGS / f"{name}_pretrain.yaml").read_text())
    joint_cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data = instantiate(pre_cfg["data"], seed=seed)
    data.setup("fit")
    pretrain = instantiate(pre_cfg["model"])
    fit(pretrain, data, 2 if quick else pre_cfg["trainer"]["max_epochs"])
    overrides = {"predictor_checkpoint": None}
    if quick:
        overrides["epochs_per_temperature"] = 1
    joint = instantiate(joint_cfg["model"], **overrides)
    joint.selector.predictor.load_state_dict(pretrain.predictor.state_dict())
    fit(joint, data, 5 if quick else joint_cfg["trainer"]["max_epochs"])
    train_seconds = time.perf_counter() - start

    budget = BUDGETS[name]
    selector = joint.selector
    d = selector.num_players
    x, y = data.test_dataset.inputs, data.test_dataset.targets
    x_val, y_val = data.val_dataset.inputs, data.val_dataset.targets
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        importance = permutation_importance(pretrain, x_val, y_val, pretrain.players, generator=generator)
        orders = {
            "static": ranking(importance),
            "static_greedy": greedy_static_order(pretrain, x_val, y_val, d, budget),
            "random": random_orders(len(x), d, generator),
        }
        result: dict[str, Any] = {"dynamic": scores(selector.select(x, budget=budget).logits, y)}
        for method, order in orders.items():
            result[method] = scores(evaluate_orders(selector.predict, x, order, d, budget), y)
            result[f"{method}_pretrained_predictor"] = scores(
                evaluate_orders(pretrain, x, order, d, budget), y
            )
        everything = torch.ones(len(x), d, dtype=torch.bool)
        # The joint predictor only trains on up to max_features features, so the pre-trained one (trained on subsets
        # of every size) can be better with all of them: both are kept, and the goals use the better one.
        result["all_features"] = {
            k: v[0] for k, v in scores(selector.predict(x, everything)[:, None], y).items()
        }
        result["all_features_pretrained_predictor"] = {
            k: v[0] for k, v in scores(pretrain(x, everything)[:, None], y).items()
        }
    result["static_order"] = orders["static"][:budget].tolist()
    result["static_greedy_order"] = orders["static_greedy"].tolist()
    # CPU time is what the job costs on an idle core; wall time also counts waiting for a busy machine.
    cpu = time.process_time() - cpu_start
    result["seconds"] = {"train": train_seconds, "total": time.perf_counter() - start, "cpu": cpu}
    return result


def report(job: tuple[str, int], output: dict[str, Any]) -> dict[str, Any]:
    """Print one finished job's headline numbers (so a long run shows progress) and pass it on."""
    name, seed = job
    dynamic, static = output["dynamic"]["accuracy"], output["static"]["accuracy"]
    k = min(5, len(dynamic) - 1)
    print(
        f"[dfs] {name} seed {seed}: accuracy with {k} features dynamic {dynamic[k]:.3f} static {static[k]:.3f} "
        f"({output['seconds']['total']:.0f} s, {output['seconds']['cpu']:.0f} s CPU)",
        flush=True,
    )
    return output


def mean_std(runs: list[dict[str, Any]], method: str, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.tensor([run[method][metric] for run in runs], dtype=torch.float64)
    return values.mean(0), values.std(0, unbiased=False) if len(runs) > 1 else torch.zeros(values.shape[1])


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = ["accuracy"] + (["auroc"] if "auroc" in runs[0]["dynamic"] else [])
    summary: dict[str, Any] = {"budgets": list(range(BUDGETS[name] + 1)), "seeds": len(runs)}
    for metric in metrics:
        summary[metric] = {}
        for method in [*METHODS, *(f"{m}_pretrained_predictor" for m in METHODS[1:])]:
            mean, std = mean_std(runs, method, metric)
            summary[metric][method] = {"mean": mean.tolist(), "std": std.tolist()}
        for key in ("all_features", "all_features_pretrained_predictor"):
            full = torch.tensor([run[key][metric] for run in runs], dtype=torch.float64)
            summary[metric][key] = {"mean": full.mean().item(), "std": full.std(unbiased=False).item()}
    summary["seconds_per_seed"] = [run["seconds"]["total"] for run in runs]
    summary["cpu_seconds_per_seed"] = [run["seconds"]["cpu"] for run in runs]
    return summary


def check_goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, against the better of the two predictors for each static curve (conservative)."""
    goals: dict[str, Any] = {}
    if "digits_pixels" in results:
        acc = results["digits_pixels"]["accuracy"]
        dyn = torch.tensor(acc["dynamic"]["mean"])
        static = torch.maximum(
            torch.tensor(acc["static"]["mean"]), torch.tensor(acc["static_pretrained_predictor"]["mean"])
        )
        greedy = torch.maximum(
            torch.tensor(acc["static_greedy"]["mean"]),
            torch.tensor(acc["static_greedy_pretrained_predictor"]["mean"]),
        )
        goals["digits_pixels"] = {
            "dynamic_above_static_at_every_budget_3_to_15": bool((dyn[3:16] > static[3:16]).all()),
            "mean_gain_over_static_budgets_1_to_10_points": 100 * (dyn[1:11] - static[1:11]).mean().item(),
            "goal_gain_points": 5.0,
            "dynamic_above_static_greedy_at_every_budget_3_to_15": bool((dyn[3:16] > greedy[3:16]).all()),
            "mean_gain_over_static_greedy_budgets_1_to_10_points": 100
            * (dyn[1:11] - greedy[1:11]).mean().item(),
        }
    if "breast_cancer" in results:
        auroc = results["breast_cancer"]["auroc"]
        full = max(auroc["all_features"]["mean"], auroc["all_features_pretrained_predictor"]["mean"])
        dyn = auroc["dynamic"]["mean"]
        reached = [k for k in range(1, len(dyn)) if dyn[k] >= full - 0.01]
        goals["breast_cancer"] = {
            "all_features_auroc": full,
            "features_to_reach_all_features_auroc_minus_0.01": reached[0] if reached else None,
            "goal_features": 8,
        }
    return goals


def plot(results: dict[str, Any], path: Path) -> None:
    panels = [(name, "accuracy") for name in results] + [
        (name, "auroc") for name in results if "auroc" in results[name]
    ]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    labels = {
        "dynamic": "dynamic policy",
        "static": "static (permutation)",
        "static_greedy": "static (greedy)",
        "random": "random order",
    }
    for ax, (name, metric) in zip(axes.flat, panels):
        summary = results[name]
        budgets = summary["budgets"][1:]
        for method in METHODS:
            mean = torch.tensor(summary[metric][method]["mean"][1:])
            std = torch.tensor(summary[metric][method]["std"][1:])
            ax.plot(budgets, mean, marker="o", markersize=3, label=labels[method])
            ax.fill_between(budgets, mean - std, mean + std, alpha=0.2)
        full = max(summary[metric][k]["mean"] for k in ("all_features", "all_features_pretrained_predictor"))
        ax.axhline(full, color="black", linestyle="--", linewidth=1, label="all features")
        ax.set_xlabel("features acquired")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each (one per core)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only, to check the script runs")
    args = parser.parse_args()

    start = time.perf_counter()
    jobs = [(name, seed) for name in args.datasets for seed in args.seeds]
    results_in_order = run_jobs(run_one, [(name, seed, args.quick) for name, seed in jobs], args.workers)
    outputs = [report(job, output) for job, output in zip(jobs, results_in_order)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.datasets}
    for (name, _), output in zip(jobs, outputs):
        runs[name].append(output)
    results = {name: summarise(name, runs[name]) for name in args.datasets}
    goals = check_goals(results)
    wall = time.perf_counter() - start

    for name, summary in results.items():
        for metric in [m for m in ("accuracy", "auroc") if m in summary]:
            print(f"\n{name}: test {metric} (mean ± std over {summary['seeds']} seeds) by number of features")
            rows = []
            for method in METHODS:
                row = {"method": method}
                stats = summary[metric][method]
                for k in summary["budgets"][1:]:
                    row[str(k)] = f"{stats['mean'][k]:.3f}±{stats['std'][k]:.3f}"
                rows.append(row)
            print_table(rows, ["method", *map(str, summary["budgets"][1:])])
            print(
                f"all features: {summary[metric]['all_features']['mean']:.3f} (joint predictor), "
                f"{summary[metric]['all_features_pretrained_predictor']['mean']:.3f} (pre-trained predictor)"
            )
    print("\ngoals:", goals)
    cpu = sum(run["seconds"]["cpu"] for dataset in runs.values() for run in dataset)
    print(f"wall time {wall:.0f} s with {args.workers} worker(s); {cpu:.0f} s of CPU time in the jobs")

    payload = {
        "benchmark": "dfs",
        "command": "python -m benchmarks.dfs "
        + " ".join(
            [
                f"--datasets {' '.join(args.datasets)}",
                f"--seeds {' '.join(map(str, args.seeds))}",
                f"--workers {args.workers}",
            ]
            + (["--quick"] if args.quick else [])
        ),
        "environment": environment() | {"threads_per_worker": 1, "workers": args.workers},
        "wall_seconds": wall,
        "job_cpu_seconds": cpu,
        "results": results,
        "goals": goals,
        "runs": runs,
    }
    print("wrote", write_json("dfs", payload))
    plot(results, RESULTS / "dfs.png")
    print("wrote", RESULTS / "dfs.png")


if __name__ == "__main__":
    main()
