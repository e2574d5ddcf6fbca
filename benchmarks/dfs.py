"""Does the learned dynamic policy beat static feature rankings? (Covert et al., ICML 2023, Figs. 3-4; DIME,
Gadgil, Covert & Lee, ICLR 2024)

For each dataset (8x8 digits pixel by pixel, digits in 2x2 blocks, breast cancer, real MNIST pixels) and each seed
(which also draws the data split), train the predictor on random subsets (``configs/dfs/<dataset>_pretrain.yaml``),
then from that same predictor the greedy policy (``<dataset>.yaml``) and DIME (``<dataset>_dime.yaml``), and
measure test accuracy (and AUROC for breast cancer) after 1..K acquired features for:

- ``dynamic``: the learned greedy policy (argmax choices);
- ``dime``: DIME's value network (argmax of the estimated conditional mutual information);
- ``static``: one global ranking by permutation importance of the pre-trained predictor (computed on validation);
- ``static_greedy``: one global order by forward selection on validation (a stronger static order; on MNIST the
  candidates are the 60 pixels ranked highest by permutation importance and 200 validation digits score them and
  the permutation importance, to keep 784 x 50 forward passes affordable on a CPU);
- ``random``: an independent random order per test input.

The static and random orders are scored with the greedy policy's jointly trained predictor (their scores with the
pre-trained predictor are in the JSON too, and the goals are checked against the better of the two). DIME's
confidence stopping (``select(confidence=...)``, capped at K features) is scored too: accuracy and mean number of
features per threshold. Mean, std and a 95 % Student-t interval over seeds.

    python -m benchmarks.dfs [--datasets digits_pixels digits_patches breast_cancer mnist] [--seeds 0 1 2 3 4]
        [--seeds-for breast_cancer=0-9 mnist=0,1,4] [--train-per-class 100 250] [--curve-seeds 0-4]
        [--workers 2] [--resume] [--retrain-dime]

Each finished (dataset, seed) is saved at once under benchmarks/results/dfs_runs/ (``--resume`` reuses them;
``--retrain-dime`` retrains DIME in them and keeps every other method).

Writes benchmarks/results/dfs.json and benchmarks/results/dfs.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import t as student_t  # noqa: E402
from torchmetrics.functional.classification import binary_auroc  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    command_line,
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
BUDGETS = {"digits_pixels": 20, "digits_patches": 10, "breast_cancer": 10, "mnist": 50}
METHODS = ("dynamic", "dime", "static", "static_greedy", "random")
#: Orders scored with both predictors (the joint one and the pre-trained one).
ORDERS = ("static", "static_greedy", "random")
#: DIME's confidence thresholds (each capped at the dataset's budget).
CONFIDENCES = (0.9, 0.95, 0.99, 0.999)
#: Datasets with many players: permutation importance with one repeat, greedy static order over a candidate pool.
LARGE = {"mnist": {"repeats": 1, "candidates": 60, "rows": 200}}
RUNS = RESULTS / "dfs_runs"
#: Covert et al. (ICML 2023), MNIST accuracy % with 5 / 10 / 20 / 50 pixels (../shared/REFERENCES.md).
PAPER_MNIST = {5: 69.0, 10: 87.1, 20: 94.4, 50: 97.4}
#: The MNIST learning curve's cut schedule (config overrides and epochs): 2 temperatures x 1 epoch for the policy, 2
#: epochs for DIME, so that 15 runs (3 training sizes x 5 seeds) fit in a CPU session; its full-split point is run
#: with the same cut schedule, so the curve compares training sizes only.
CURVE_SCHEDULE = {
    "joint": {"overrides": {"temperatures": [1.0, 0.1], "epochs_per_temperature": 1}, "max_epochs": 2},
    "dime": {"overrides": {"epsilon_patience": 1}, "max_epochs": 2},
}


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


def all_features_scores(
    predict, x: torch.Tensor, target: torch.Tensor, num_features: int
) -> dict[str, float]:
    """Accuracy (and AUROC) of ``predict(x, keep)`` with every feature kept."""
    everything = torch.ones(len(x), num_features, dtype=torch.bool)
    return {k: v[0] for k, v in scores(predict(x, everything)[:, None], target).items()}


def run_file(name: str, seed: int, train_per_class: int | None = None, curve: bool = False) -> Path:
    size = f"_train{train_per_class}" if train_per_class else ""
    return RUNS / f"{name}_seed{seed}{size}{'_curve' if curve else ''}.json"


def run_one(
    name: str,
    seed: int,
    quick: bool = False,
    resume: bool = False,
    train_per_class: int | None = None,
    curve: bool = False,
    dime_only: bool = False,
) -> dict[str, Any]:
    """Train and score one dataset and seed (on ``train_per_class`` training samples of each class, if given; with
    the learning curve's :data:`CURVE_SCHEDULE` if ``curve``); the result is also saved to :func:`run_file` (read
    back on resume). ``dime_only``: retrain DIME in the saved run (:func:`retrain_dime`); learning-curve runs are
    read back as on resume."""
    path = run_file(name, seed, train_per_class, curve)
    if dime_only and not curve:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: --retrain-dime retrains DIME in saved runs only")
        result = retrain_dime(name, seed, json.loads(path.read_text()), train_per_class)
    elif (resume or dime_only) and path.exists() and not quick:
        return json.loads(path.read_text())
    else:
        result = train_and_score(name, seed, quick, train_per_class, curve)
    if not quick:
        RUNS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
    return result


def confidence_scores(selection, target: torch.Tensor) -> dict[str, float]:
    """Accuracy (and AUROC) of the predictions each sample stopped with, and the mean number of features."""
    final = selection.final_logits[:, None]
    out = {k: v[0] for k, v in scores(final, target).items()}
    out["features"] = selection.num_selected.float().mean().item()
    return out


def schedule(stage: str, cfg: dict[str, Any], quick: bool, curve: bool) -> tuple[dict[str, Any], int]:
    """Config overrides and epochs of a stage (``"joint"`` or ``"dime"``): the config's own, the learning curve's
    :data:`CURVE_SCHEDULE`, or a few epochs for ``--quick``."""
    if quick:
        return ({"epochs_per_temperature": 1}, 5) if stage == "joint" else ({}, 2)
    if curve:
        return CURVE_SCHEDULE[stage]["overrides"], CURVE_SCHEDULE[stage]["max_epochs"]
    return {}, cfg["trainer"]["max_epochs"]


def fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's weights: equal only for bit-identical weights (a float summed in another order on
    another CPU changes it, where a test accuracy may not)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def pretrain_stage(
    name: str, seed: int, quick: bool, train_per_class: int | None
) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The seed's data split and the predictor pre-trained on random subsets (deterministic for a seed)."""
    L.seed_everything(seed, verbose=False)
    pre_cfg = yaml.safe_load((CONFIGS / f"{name}_pretrain.yaml").read_text())
    data = instantiate(
        pre_cfg["data"], seed=seed, **({"train_per_class": train_per_class} if train_per_class else {})
    )
    data.setup("fit")
    pretrain = instantiate(pre_cfg["model"])
    fit(pretrain, data, 2 if quick else pre_cfg["trainer"]["max_epochs"])
    return data, pretrain


def train_stage(name: str, stage: str, data, pretrain, quick: bool, curve: bool) -> L.LightningModule:
    """Stage 2, ``"joint"`` (the greedy policy, ``<name>.yaml``) or ``"dime"`` (``<name>_dime.yaml``), trained from
    the pre-trained predictor with its :func:`schedule`."""
    cfg = yaml.safe_load((CONFIGS / f"{name}{'_dime' if stage == 'dime' else ''}.yaml").read_text())
    overrides, epochs = schedule(stage, cfg, quick, curve)
    module = instantiate(cfg["model"], predictor_checkpoint=None, **overrides)
    module.selector.predictor.load_state_dict(pretrain.predictor.state_dict())
    fit(module, data, epochs)
    return module


def dime_stage(
    name: str, seed: int, data, pretrain, quick: bool, curve: bool
) -> tuple[L.LightningModule, dict[str, Any]]:
    """DIME trained from the pre-trained predictor, and its scores on the test split. Seeded on its own, so that
    retraining DIME alone (``--retrain-dime``) gives what a full run gives."""
    start, cpu_start = time.perf_counter(), time.process_time()
    L.seed_everything(seed, verbose=False)
    dime = train_stage(name, "dime", data, pretrain, quick, curve)
    train_seconds = time.perf_counter() - start
    budget, x, y = BUDGETS[name], data.test_dataset.inputs, data.test_dataset.targets
    with torch.no_grad():
        result = {
            "dime": scores(dime.selector.select(x, budget=budget).logits, y),
            "dime_confidence": {
                str(c): confidence_scores(dime.selector.select(x, budget=budget, confidence=c), y)
                for c in CONFIDENCES
            },
            "all_features_dime_predictor": all_features_scores(
                dime.selector.predict, x, y, dime.selector.num_players
            ),
        }
    result["dime_epochs"] = dime.current_epoch
    result["dime_seconds"] = {"train": train_seconds, "cpu": time.process_time() - cpu_start}
    return dime, result


def train_and_score(
    name: str, seed: int, quick: bool = False, train_per_class: int | None = None, curve: bool = False
) -> dict[str, Any]:
    """Train the stages for one dataset and seed, and score every method at budgets 0..K (on the full test split
    also when ``train_per_class`` shrinks the training split; ``curve``: the stages' epochs cut to
    :data:`CURVE_SCHEDULE`)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    data, pretrain = pretrain_stage(name, seed, quick, train_per_class)
    joint = train_stage(name, "joint", data, pretrain, quick, curve)
    joint_seconds = time.perf_counter() - start
    _, result = dime_stage(name, seed, data, pretrain, quick, curve)
    train_seconds = joint_seconds + result["dime_seconds"]["train"]

    budget = BUDGETS[name]
    selector = joint.selector
    d = selector.num_players
    x, y = data.test_dataset.inputs, data.test_dataset.targets
    x_val, y_val = data.val_dataset.inputs, data.val_dataset.targets
    generator = torch.Generator().manual_seed(seed)
    large = LARGE.get(name, {})
    with torch.no_grad():
        rows = slice(0, large.get("rows", len(x_val)))
        importance = permutation_importance(
            pretrain, x_val[rows], y_val[rows], pretrain.players, large.get("repeats", 3), generator
        )
        static = ranking(importance)
        pool = static[: large["candidates"]] if large else None
        orders = {
            "static": static,
            "static_greedy": greedy_static_order(pretrain, x_val[rows], y_val[rows], d, budget, pool),
            "random": random_orders(len(x), d, generator),
        }
        result["dynamic"] = scores(selector.select(x, budget=budget).logits, y)
        for method, order in orders.items():
            result[method] = scores(evaluate_orders(selector.predict, x, order, d, budget), y)
            result[f"{method}_pretrained_predictor"] = scores(
                evaluate_orders(pretrain, x, order, d, budget), y
            )
        # The joint predictor only trains on up to max_features features, so the pre-trained one (trained on subsets
        # of every size) can be better with all of them: both are kept, and the goals use the better one.
        result["all_features"] = all_features_scores(selector.predict, x, y, d)
        result["all_features_pretrained_predictor"] = all_features_scores(pretrain, x, y, d)
    result["pretrained_predictor_sha256"] = fingerprint(pretrain.predictor)
    result["static_order"] = orders["static"][:budget].tolist()
    result["static_greedy_order"] = orders["static_greedy"].tolist()
    # CPU time is what the job costs on an idle core; wall time also counts waiting for a busy machine.
    cpu = time.process_time() - cpu_start
    result["seconds"] = {
        "train": train_seconds,
        "train_pretrain_and_policy": joint_seconds,
        "total": time.perf_counter() - start,
        "cpu": cpu,
    }
    return result


def retrain_dime(
    name: str, seed: int, saved: dict[str, Any], train_per_class: int | None = None
) -> dict[str, Any]:
    """A saved run with DIME trained and scored again (after a change to DIME or its config), every other method
    kept. The pre-trained predictor is trained again (deterministic for a seed on one machine) and must be the one
    the saved methods used: the same weights (:func:`fingerprint`), or, for runs saved without one, the same
    all-features test accuracy; otherwise the run is refused."""
    data, pretrain = pretrain_stage(name, seed, False, train_per_class)
    if "pretrained_predictor_sha256" in saved:
        same = fingerprint(pretrain.predictor) == saved["pretrained_predictor_sha256"]
    else:
        x, y = data.test_dataset.inputs, data.test_dataset.targets
        with torch.no_grad():
            accuracy = all_features_scores(pretrain, x, y, pretrain.players.num_players)["accuracy"]
        same = accuracy == saved["all_features_pretrained_predictor"]["accuracy"]
    if not same:
        raise RuntimeError(
            f"{name} seed {seed}: the pre-trained predictor did not reproduce (another machine or library version "
            "trained the saved run's); rerun the seed in full (without --resume)"
        )
    _, result = dime_stage(name, seed, data, pretrain, False, False)
    seconds = replace_dime_seconds(saved["seconds"], saved["dime_seconds"], result["dime_seconds"])
    return (
        saved | result | {"seconds": seconds, "pretrained_predictor_sha256": fingerprint(pretrain.predictor)}
    )


def replace_dime_seconds(
    seconds: dict[str, float], old: dict[str, float], new: dict[str, float]
) -> dict[str, float]:
    """A run's ``seconds`` with its DIME stage's time (``old``, a run's ``dime_seconds``) replaced by a retrained
    DIME's (``new``), so that the totals stay those of the run as it now stands."""
    return {
        "train": seconds["train_pretrain_and_policy"] + new["train"],
        "train_pretrain_and_policy": seconds["train_pretrain_and_policy"],
        "total": seconds["total"] - old["train"] + new["train"],
        "cpu": seconds["cpu"] - old["cpu"] + new["cpu"],
    }


def report(job: tuple[str, int, int | None, bool], output: dict[str, Any]) -> dict[str, Any]:
    """Print one finished job's headline numbers (so a long run shows progress) and pass it on."""
    name, seed, train_per_class, curve = job
    dynamic, static = output["dynamic"]["accuracy"], output["static"]["accuracy"]
    dime = output["dime"]["accuracy"]
    k = min(5, len(dynamic) - 1)
    print(
        f"[dfs] {name} seed {seed}{f' ({train_per_class} per class)' if train_per_class else ''}"
        f"{' (learning curve)' if curve else ''}: accuracy with {k} features dynamic {dynamic[k]:.3f} "
        f"dime {dime[k]:.3f} static {static[k]:.3f} "
        f"({output['seconds']['total']:.0f} s, {output['seconds']['cpu']:.0f} s CPU)",
        flush=True,
    )
    return output


def stats(values: torch.Tensor) -> dict[str, Any]:
    """Mean, std (population) and the half-width of a 95 % Student-t interval of the mean, over dimension 0."""
    n = values.shape[0]
    std = values.std(0, unbiased=False) if n > 1 else torch.zeros_like(values[0])
    half = (
        student_t.ppf(0.975, n - 1) * values.std(0, unbiased=True) / n**0.5
        if n > 1
        else torch.full_like(values[0], float("nan"))
    )
    return {"mean": values.mean(0).tolist(), "std": std.tolist(), "ci95": half.tolist()}


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = ["accuracy"] + (["auroc"] if "auroc" in runs[0]["dynamic"] else [])
    summary: dict[str, Any] = {"budgets": list(range(BUDGETS[name] + 1)), "seeds": len(runs)}
    for metric in metrics:
        summary[metric] = {}
        for method in [*METHODS, *(f"{m}_pretrained_predictor" for m in ORDERS)]:
            values = torch.tensor([run[method][metric] for run in runs], dtype=torch.float64)
            summary[metric][method] = stats(values)
        for key in ("all_features", "all_features_pretrained_predictor", "all_features_dime_predictor"):
            summary[metric][key] = stats(
                torch.tensor([run[key][metric] for run in runs], dtype=torch.float64)
            )
    summary["dime_confidence"] = {
        c: {
            key: stats(torch.tensor([run["dime_confidence"][c][key] for run in runs], dtype=torch.float64))
            for key in runs[0]["dime_confidence"][c]
        }
        for c in runs[0]["dime_confidence"]
    }
    summary["seconds_per_seed"] = [run["seconds"]["total"] for run in runs]
    summary["cpu_seconds_per_seed"] = [run["seconds"]["cpu"] for run in runs]
    return summary


#: The budgets a learning curve reports (the paper's MNIST budgets).
CURVE_BUDGETS = tuple(PAPER_MNIST)


def curve_label(train_per_class: int | None) -> str:
    """A learning-curve point's name: its number of training digits, or ``"all"`` (the full training split)."""
    return str(10 * train_per_class) if train_per_class else "all"


def learning_curve(curve_runs: dict[int | None, list[dict[str, Any]]]) -> dict[str, Any]:
    """Test accuracy at the paper's budgets by number of training digits (10 classes x ``n`` per class, and
    ``None``: the full split), every point trained with :data:`CURVE_SCHEDULE`: mean and 95 % interval over seeds,
    per method. The epochs are the same at every size, so a smaller split also means fewer optimisation steps."""

    def at_budgets(summary: dict[str, Any]) -> dict[str, Any]:
        return {
            method: {
                "mean": [summary["accuracy"][method]["mean"][k] for k in CURVE_BUDGETS],
                "ci95": [summary["accuracy"][method]["ci95"][k] for k in CURVE_BUDGETS],
            }
            for method in METHODS
        } | {"seeds": summary["seeds"]}

    sizes = sorted(curve_runs, key=lambda n: n or float("inf"))
    curve = {curve_label(n): at_budgets(summarise("mnist", curve_runs[n])) for n in sizes}
    return {"budgets": list(CURVE_BUDGETS), "schedule": CURVE_SCHEDULE, "training_digits": curve}


def print_learning_curve(curve: dict[str, Any]) -> None:
    print("\nmnist learning curve: test accuracy (mean ± 95 % interval over seeds) by training digits")
    rows = []
    for size, by_method in curve["training_digits"].items():
        for method in ("dynamic", "dime", "static_greedy"):
            row = {"train digits": size, "method": method}
            for k, mean, half in zip(curve["budgets"], by_method[method]["mean"], by_method[method]["ci95"]):
                row[str(k)] = f"{mean:.3f}±{half:.3f}"
            rows.append(row)
    print_table(rows, ["train digits", "method", *map(str, curve["budgets"])])


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
            "all_features_auroc_ci95": auroc["all_features"]["ci95"],
            "features_to_reach_all_features_auroc_minus_0.01": reached[0] if reached else None,
            "goal_features": 8,
        }
    if "mnist" in results:
        acc = results["mnist"]["accuracy"]
        dyn = torch.tensor(acc["dynamic"]["mean"])
        best_static = torch.stack(
            [
                torch.tensor(acc[f"{m}{p}"]["mean"])
                for m in ("static", "static_greedy")
                for p in ("", "_pretrained_predictor")
            ]
        ).amax(dim=0)
        goals["mnist"] = {
            "dynamic_accuracy_vs_paper_points": {
                str(k): {"ours": 100 * dyn[k].item(), "paper": paper, "gap": 100 * dyn[k].item() - paper}
                for k, paper in PAPER_MNIST.items()
            },
            "dynamic_within_3_points_of_paper": all(
                100 * dyn[k].item() >= p - 3 for k, p in PAPER_MNIST.items()
            ),
            "dynamic_above_both_static_orders_at_every_budget_5_to_50": bool(
                (dyn[5:51] > best_static[5:51]).all()
            ),
            "budgets_5_to_50_where_a_static_order_is_not_below_dynamic": [
                k for k in range(5, 51) if dyn[k] <= best_static[k]
            ],
        }
    for name, summary in results.items():
        goals.setdefault(name, {}).update(dime_goals(summary))
    return goals


def dime_goals(summary: dict[str, Any]) -> dict[str, Any]:
    """DIME against the greedy policy at every budget, and its confidence stopping against fixed budgets."""
    out: dict[str, Any] = {}
    for metric in [m for m in ("accuracy", "auroc") if m in summary]:
        dime, dyn = (
            torch.tensor(summary[metric]["dime"]["mean"]),
            torch.tensor(summary[metric]["dynamic"]["mean"]),
        )
        out[f"dime_at_least_dynamic_{metric}_at_every_budget"] = bool((dime[1:] >= dyn[1:]).all())
        out[f"budgets_where_dime_below_dynamic_{metric}"] = [
            k for k in range(1, len(dime)) if dime[k] < dyn[k]
        ]
    acc = summary["accuracy"]
    full = max(
        acc[k]["mean"]
        for k in ("all_features", "all_features_pretrained_predictor", "all_features_dime_predictor")
    )
    target = full - 0.01
    fixed = [k for k, v in enumerate(acc["dime"]["mean"]) if v >= target]
    stopping = {
        c: v["features"]["mean"]
        for c, v in summary["dime_confidence"].items()
        if v["accuracy"]["mean"] >= target
    }
    best = min(stopping.items(), key=lambda item: item[1]) if stopping else None
    out["dime_confidence_stopping"] = {
        "target_accuracy": target,
        "smallest_fixed_budget_reaching_it": fixed[0] if fixed else None,
        "best_threshold_reaching_it": best[0] if best else None,
        "its_mean_features": best[1] if best else None,
        "fewer_features_than_any_fixed_budget": bool(best is not None and (not fixed or best[1] < fixed[0])),
    }
    return out


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
        "dime": "DIME (CMI value network)",
        "static": "static (permutation)",
        "static_greedy": "static (greedy)",
        "random": "random order",
    }
    for ax, (name, metric) in zip(axes.flat, panels):
        summary = results[name]
        budgets = summary["budgets"][1:]
        for method in METHODS:
            mean = torch.tensor(summary[metric][method]["mean"][1:])
            half = torch.tensor(summary[metric][method]["ci95"][1:]).nan_to_num(0.0)
            ax.plot(budgets, mean, marker="o", markersize=2 if len(budgets) > 20 else 3, label=labels[method])
            ax.fill_between(budgets, mean - half, mean + half, alpha=0.2)
        full = max(summary[metric][k]["mean"] for k in ("all_features", "all_features_pretrained_predictor"))
        ax.axhline(full, color="black", linestyle="--", linewidth=1, label="all features")
        if name == "mnist" and metric == "accuracy":
            ax.scatter(
                list(PAPER_MNIST),
                [v / 100 for v in PAPER_MNIST.values()],
                marker="x",
                color="black",
                zorder=3,
                label="paper's policy (60,000 digits)",
            )
            ax.legend(handles=ax.get_legend_handles_labels()[0][-1:], fontsize=7, loc="lower right")
        ax.set_xlabel("features acquired")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{name.replace('_', ' ')} (mean, 95 % interval, {summary['seeds']} seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_seeds(spec: str) -> list[int]:
    """Seeds from ranges and lists: ``"0-9"``, ``"3"``, ``"0,1,4"``, ``"0-2,4"``."""
    seeds = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or not (last or first).isdigit() or int(last or first) < int(first):
            raise ValueError(f"expected seeds like 0-9, 3 or 0,1,4; got {spec!r}")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--seeds-for",
        nargs="*",
        default=[],
        metavar="DATASET=SEEDS",
        help="other seeds for some datasets, as ranges and lists, e.g. breast_cancer=0-9 mnist=0,1,4",
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse the runs saved in benchmarks/results/dfs_runs"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each (one per core)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only, to check the script runs")
    parser.add_argument(
        "--retrain-dime",
        action="store_true",
        help="train and score DIME again in the saved runs of these seeds, keeping every other method (after a "
        "change to DIME or its configs); the learning curve is read back as with --resume",
    )
    parser.add_argument(
        "--train-per-class",
        nargs="*",
        type=int,
        default=[],
        metavar="N",
        help="mnist: a learning curve under results.mnist.learning_curve: train on only N digits of each class "
        "(same test digits) and on the full split, all with the cut CURVE_SCHEDULE",
    )
    parser.add_argument(
        "--curve-seeds",
        type=parse_seeds,
        metavar="SEEDS",
        help="the learning curve's seeds (default: mnist's)",
    )
    args = parser.parse_args()
    if args.train_per_class and "mnist" not in args.datasets:
        parser.error("--train-per-class needs --datasets mnist")
    if args.retrain_dime and args.quick:
        parser.error("--retrain-dime changes saved runs, which --quick never writes")

    start = time.perf_counter()
    seeds = {name: list(args.seeds) for name in args.datasets}
    for item in args.seeds_for:
        name, _, spec = item.partition("=")
        if name not in seeds:
            parser.error(f"--seeds-for {item}: {name} is not among --datasets {' '.join(args.datasets)}")
        try:
            seeds[name] = parse_seeds(spec)
        except ValueError as error:
            parser.error(f"--seeds-for {item}: {error}")
    # In the order given: put the cheap datasets first, so a run cut short has finished them (each run is saved).
    jobs = [(name, seed, None, False) for name in args.datasets for seed in seeds[name]]
    curve_sizes = [*args.train_per_class, None] if args.train_per_class else []
    curve_seeds = args.curve_seeds or seeds.get("mnist", [])
    jobs += [("mnist", seed, n, True) for n in curve_sizes for seed in curve_seeds]
    results_in_order = run_jobs(
        run_one,
        [(name, seed, args.quick, args.resume, n, curve, args.retrain_dime) for name, seed, n, curve in jobs],
        args.workers,
    )
    outputs = [report(job, output) for job, output in zip(jobs, results_in_order)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.datasets}
    curve_runs: dict[int | None, list[dict[str, Any]]] = {n: [] for n in curve_sizes}
    for (name, _, n, curve), output in zip(jobs, outputs):
        (curve_runs[n] if curve else runs[name]).append(output)
    results = {name: summarise(name, runs[name]) | {"seed_list": seeds[name]} for name in args.datasets}
    if curve_runs:
        results["mnist"]["learning_curve"] = learning_curve(curve_runs) | {"seed_list": curve_seeds}
    goals = check_goals(results)
    wall = time.perf_counter() - start

    for name, summary in results.items():
        for metric in [m for m in ("accuracy", "auroc") if m in summary]:
            print(
                f"\n{name}: test {metric} (mean ± 95 % interval, {summary['seeds']} seeds) by number of features"
            )
            rows = []
            shown = [
                k
                for k in summary["budgets"][1:]
                if len(summary["budgets"]) <= 21 or k in (1, 2, 3, 5, 10, 15, 20, 30, 40, 50)
            ]
            for method in METHODS:
                row = {"method": method}
                values = summary[metric][method]
                for k in shown:
                    row[str(k)] = f"{values['mean'][k]:.3f}±{values['ci95'][k]:.3f}"
                rows.append(row)
            print_table(rows, ["method", *map(str, shown)])
            print(
                f"all features: {summary[metric]['all_features']['mean']:.3f} (joint predictor), "
                f"{summary[metric]['all_features_pretrained_predictor']['mean']:.3f} (pre-trained predictor), "
                f"{summary[metric]['all_features_dime_predictor']['mean']:.3f} (DIME's predictor)"
            )
        for c, v in summary["dime_confidence"].items():
            print(
                f"DIME confidence {c}: accuracy {v['accuracy']['mean']:.3f} with {v['features']['mean']:.1f} "
                "features on average"
            )
    if "learning_curve" in results.get("mnist", {}):
        print_learning_curve(results["mnist"]["learning_curve"])
    print("\ngoals:", goals)
    cpu = sum(run["seconds"]["cpu"] for dataset in runs.values() for run in dataset)
    print(f"wall time {wall:.0f} s with {args.workers} worker(s); {cpu:.0f} s of CPU time in the jobs")

    payload = {
        "benchmark": "dfs",
        "command": command_line(),
        "environment": environment() | {"threads_per_worker": 1, "workers": args.workers},
        "wall_seconds": wall,
        "job_cpu_seconds": cpu,
        "results": results,
        "goals": goals,
        "runs": runs,
        **({"learning_curve_runs": {curve_label(n): r for n, r in curve_runs.items()}} if curve_runs else {}),
    }
    print("wrote", write_json("dfs", payload))
    plot(results, RESULTS / "dfs.png")
    print("wrote", RESULTS / "dfs.png")


if __name__ == "__main__":
    main()
