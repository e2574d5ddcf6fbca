"""How good and how fast is the amortized explainer, compared with KernelSHAP? (ViT Shapley, ICLR 2023, Sec. 5)

For each dataset (digits: tiny ViT, 16 players, exact Shapley values as ground truth; shapes: CNN with baseline
filling, 64 players, KernelSHAP as ground truth; mnist: ViT on 28x28 real digits in 2x2 patches, 196 players, the
paper's scale, KernelSHAP run until every image's std ratio is below ``--truth-threshold`` as ground truth, cached in
outputs/mnist/shapley_ground_truth.pt), on held-out images and their predicted class:

- classifier test accuracy and surrogate accuracy with all players;
- the explainer's error against the ground truth (squared L2, Pearson, ...);
- KernelSHAP's error at 32...4096 evaluations (256...16384 on mnist) and the budget at which it matches the explainer;
- per-image wall time of the explainer (batched) and of KernelSHAP at that budget, measured in the same run;
- the cost of one explanation (explainer + the surrogate's v(all)) relative to one classifier forward pass.

    python -m benchmarks.vit_shapley [--datasets digits shapes mnist] [--num-images 100] [--device cpu]
    python -m benchmarks.vit_shapley --datasets mnist --num-images 30 --truth-threshold 0.01
    python -m benchmarks.vit_shapley --datasets mnist --truth-only   # ground truth + KernelSHAP curve, cached

``--truth-only`` needs only the surrogate: it computes and caches what does not depend on the explainer (the ground
truth and KernelSHAP's estimates at every budget, outputs/<dataset>/kernel_shap_estimates.pt), so that work can run
on another core while the explainer trains.

Reuses outputs/<dataset>/{classifier,surrogate,explainer}/checkpoints/best.ckpt (trained by ``make demo`` or
``train.py``) and trains the missing stages with the configs in configs/<dataset>/. Writes
benchmarks/results/vit_shapley.json and benchmarks/results/vit_shapley.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import RESULTS, environment, interleaved_times, print_table, write_json
from lit_xai.algorithms.vit_shapley import ExplainerModule
from lit_xai.algorithms.vit_shapley.evaluation import (
    compare_with_kernel_shap,
    ground_truth_shapley,
    kernel_shap_estimates,
)
from lit_xai.checkpoint_identity import load_stage
from lit_xai.cli import main as cli_main
from lit_xai.io import atomic_save, safe_torch_load
from lit_xai.models import backbone_from_checkpoint
from lit_xai.shapley import ModelGame, kernel_shap
from lit_xai.viz import curves, save_figure

DATASETS = ("digits", "shapes", "mnist")
BUDGETS = {
    "digits": [32, 64, 128, 256, 512, 1024, 2048, 4096],
    "shapes": [32, 64, 128, 256, 512, 1024, 2048, 4096],
    "mnist": [256, 512, 1024, 2048, 4096, 8192, 16384],
}
GOALS = {
    "digits": {"matching_budget": 256},
    "shapes": {"matching_budget": 1024},
    "mnist": {"matching_budget": 2048},
}


def checkpoint(dataset: str, stage: str) -> Path:
    return Path("outputs") / dataset / stage / "checkpoints" / "best.ckpt"


def ensure_trained(dataset: str, stages: tuple[str, ...] = ("classifier", "surrogate", "explainer")) -> None:
    for stage in stages:
        if not checkpoint(dataset, stage).is_file():
            print(f"[vit_shapley] training {dataset} {stage}")
            cli_main(
                [
                    "fit",
                    "--config",
                    f"configs/{dataset}/{stage}.yaml",
                    "--trainer.enable_progress_bar",
                    "false",
                ]
            )


def test_split(dataset: str):
    from lit_xai.data import DigitsDataModule, MNISTDataModule, ShapesDataModule

    modules = {"digits": DigitsDataModule, "shapes": ShapesDataModule, "mnist": MNISTDataModule}
    data = modules[dataset](seed=0)
    data.setup("test")
    x = torch.stack([data.test_dataset[i]["input"] for i in range(len(data.test_dataset))])
    y = torch.stack([data.test_dataset[i]["target"] for i in range(len(data.test_dataset))])
    return x, y


def median_seconds(fn, repeats: int = 3) -> float:
    return statistics.median(interleaved_times({"fn": fn}, repeats)["fn"])


def converged_ground_truth(
    dataset: str,
    net,
    x: torch.Tensor,
    target: torch.Tensor,
    threshold: float,
    max_evaluations: int,
    chunk: int = 10,
) -> dict:
    """KernelSHAP run until each image's std ratio is below ``threshold``, ``chunk`` images at a time, cached.

    The cache (outputs/<dataset>/shapley_ground_truth.pt) is keyed by the surrogate checkpoint's digest and the
    threshold and is written after every chunk, so a stopped run keeps what it computed; an image is computed again
    when an earlier run stopped it at a lower cap without converging. Returns the values
    ``(B, d)``, their estimated standard deviations, the evaluations each image used and whether it converged.
    """
    path = checkpoint(dataset, "surrogate").parents[2] / "shapley_ground_truth.pt"
    key = {"surrogate": file_digest(checkpoint(dataset, "surrogate")), "threshold": threshold}
    cache = safe_torch_load(path) if path.is_file() else {}
    if cache.get("key") != key:
        cache = {"key": key, "images": {}}
    images = cache["images"]

    def reusable(entry: dict | None, i: int) -> bool:
        # Same class explained, and finished under this run's rule: converged, or stopped at a cap at least as high.
        return (
            entry is not None
            and entry["target"] == int(target[i])
            and (entry["ratio"] < threshold or entry["evaluations"] >= max_evaluations)
        )

    for start in range(0, x.shape[0], chunk):
        rows = [i for i in range(start, min(start + chunk, x.shape[0])) if not reusable(images.get(i), i)]
        if not rows:
            continue
        print(f"[vit_shapley] {dataset} ground truth for images {rows[0]}..{rows[-1]}")
        index = torch.tensor(rows, device=x.device)
        game = ModelGame(
            net.surrogate, net.masker, x[index], link=net.link, target=target[index], batch_size=512
        )
        result = kernel_shap(
            game,
            net.num_players,
            threshold=threshold,
            max_evaluations=max_evaluations,
            batch_size=1024,
            generator=torch.Generator().manual_seed(1 + start),
            progress=True,
        )
        for j, i in enumerate(rows):
            images[i] = {
                "target": int(target[i]),
                "values": result.values[j, :, 0].float().cpu(),
                "std": result.std[j, :, 0].float().cpu(),
                "evaluations": int(result.evaluations[j]),
                "ratio": float(result.ratio[j]),
            }
        atomic_save(cache, path)
    chosen = [images[i] for i in range(x.shape[0])]
    return {
        "values": torch.stack([c["values"] for c in chosen]).to(x.device),
        "std": torch.stack([c["std"] for c in chosen]),
        "evaluations": [c["evaluations"] for c in chosen],
        "ratio": [c["ratio"] for c in chosen],
    }


def cached_kernel_estimates(
    dataset: str, net, x: torch.Tensor, target: torch.Tensor, budgets: list[int]
) -> dict[int, torch.Tensor]:
    """KernelSHAP's estimates at each budget (:func:`kernel_shap_estimates`), cached in
    outputs/<dataset>/kernel_shap_estimates.pt under the surrogate's digest, the images, targets and budgets."""
    path = checkpoint(dataset, "surrogate").parents[2] / "kernel_shap_estimates.pt"
    key = {
        "surrogate": file_digest(checkpoint(dataset, "surrogate")),
        "images": hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest()[:16],
        "target": target.tolist(),
        "budgets": budgets,
    }
    cache = safe_torch_load(path) if path.is_file() else {}
    if cache.get("key") == key:
        return {int(k): v.to(x.device) for k, v in cache["estimates"].items()}
    print(f"[vit_shapley] {dataset} KernelSHAP up to {max(budgets)} evaluations for {x.shape[0]} images")
    estimates = kernel_shap_estimates(net, x, target, budgets)
    atomic_save({"key": key, "estimates": {k: v.cpu() for k, v in estimates.items()}}, path)
    return estimates


def surrogate_only_net(dataset: str):
    """The explainer's network around the trained surrogate, its explainer head untrained: enough for everything
    that explains the surrogate's game (ground truth, KernelSHAP), before the explainer exists."""
    config = yaml.safe_load(Path(f"configs/{dataset}/explainer.yaml").read_text())
    init_args = config["model"]["init_args"] | {"surrogate_checkpoint": str(checkpoint(dataset, "surrogate"))}
    return ExplainerModule(**init_args).eval().net


def stopping_rule(net, x: torch.Tensor, target: torch.Tensor, truth: torch.Tensor) -> dict:
    """KernelSHAP stopped by its own rule, against exact values: evaluations per image and the error reached.

    Shows that the threshold means what it says: at ``std ratio < t`` the largest error of an image is about ``t``
    times the range of its values.
    """
    game = ModelGame(net.surrogate, net.masker, x, link=net.link, target=target, batch_size=4096)
    spread = truth.amax(1) - truth.amin(1)
    out = {}
    for threshold in (0.05, 0.01):
        result = kernel_shap(
            game,
            net.num_players,
            threshold=threshold,
            batch_size=64,
            generator=torch.Generator().manual_seed(2),
        )
        error = result.values[..., 0].float() - truth
        evaluations = result.evaluations.double()
        out[str(threshold)] = {
            "evaluations_per_image": {
                "mean": float(evaluations.mean()),
                "min": int(evaluations.min()),
                "max": int(evaluations.max()),
            },
            "squared_error": float(error.pow(2).sum(1).mean()),
            "max_error_over_range_median": float((error.abs().amax(1) / spread).median()),
            "error_over_std_rms": float((error / result.std[..., 0]).pow(2).mean().sqrt()),
        }
    return {"kernel_shap_stopping_rule": out}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def explained_images(dataset: str, net, num_images: int, device: str):
    """The first ``num_images`` test images and the surrogate's predicted class for each (what is explained)."""
    x_all, y_all = test_split(dataset)
    x = x_all[:num_images].to(device)
    with torch.no_grad():
        target = net.grand(x).argmax(-1)
    return x_all.to(device), y_all.to(device), x, target


def truth_and_kernel_shap(
    dataset: str,
    net,
    x: torch.Tensor,
    target: torch.Tensor,
    truth_evaluations: int,
    truth_threshold: float,
) -> tuple[torch.Tensor, dict, dict[int, torch.Tensor]]:
    """The ground truth ``(B, d)``, what describes it, and KernelSHAP's estimates at every budget: everything that
    depends on the surrogate only (the mnist ones cached on disk)."""
    start = time.perf_counter()
    if dataset == "mnist":
        converged = converged_ground_truth(dataset, net, x, target, truth_threshold, truth_evaluations)
        truth = converged["values"]
        # The ground truth's own expected squared L2 error: the sum of its players' variances, mean over images.
        residual = float(converged["std"].pow(2).sum(1).mean())
        evaluations = torch.tensor(converged["evaluations"], dtype=torch.float64)
        info = {
            "ground_truth": (
                f"kernel_shap (std ratio < {truth_threshold} per image, at most {truth_evaluations} evaluations)"
            ),
            "ground_truth_threshold": truth_threshold,
            "ground_truth_residual_squared_error": residual,
            "ground_truth_evaluations_per_image": {
                "mean": float(evaluations.mean()),
                "min": int(evaluations.min()),
                "max": int(evaluations.max()),
            },
            "ground_truth_converged_images": sum(r < truth_threshold for r in converged["ratio"]),
            # 0 where the cache answered; the evaluations above are what it cost.
            "ground_truth_seconds": time.perf_counter() - start,
        }
        estimates = cached_kernel_estimates(dataset, net, x, target, BUDGETS[dataset])
    else:
        truth = ground_truth_shapley(
            net, x, target, kernel_evaluations=truth_evaluations, generator=torch.Generator().manual_seed(1)
        )
        info = {
            "ground_truth": "exact"
            if net.num_players <= 20
            else f"kernel_shap (threshold 0.005 or {truth_evaluations} evaluations)",
            "ground_truth_seconds": time.perf_counter() - start,
        }
        estimates = kernel_shap_estimates(net, x, target, BUDGETS[dataset])
    return truth, info, estimates


def run_dataset(
    dataset: str, num_images: int, device: str, truth_evaluations: int, truth_threshold: float
) -> dict:
    ensure_trained(dataset)
    classifier, _ = backbone_from_checkpoint(checkpoint(dataset, "classifier"))
    classifier = classifier.eval().to(device)
    explainer = load_stage(
        ExplainerModule,
        checkpoint(dataset, "explainer"),
        hint=f"train it with configs/{dataset}/explainer.yaml",
    ).eval()
    net = explainer.net.to(device)
    x_all, y_all, x, target = explained_images(dataset, net, num_images, device)
    with torch.no_grad():
        classifier_accuracy = (classifier(x_all).argmax(-1) == y_all).float().mean().item()
        surrogate_accuracy = (net.grand(x_all).argmax(-1) == y_all).float().mean().item()
    budgets = BUDGETS[dataset]
    truth, truth_info, estimates = truth_and_kernel_shap(
        dataset, net, x, target, truth_evaluations, truth_threshold
    )
    comparison = compare_with_kernel_shap(net, x, target, truth, budgets, kernel_estimates=estimates)
    stopping = stopping_rule(net, x, target, truth) if net.num_players <= 20 else {}

    # Speed, all measured here and now: the explainer explains the whole batch at once; KernelSHAP runs at the
    # budget that matches the explainer's error (or the largest budget when none does).
    budget = comparison.matching_budget or budgets[-1]
    with torch.no_grad():
        explainer_s = median_seconds(lambda: net.attribute(x, target)) / num_images
        forward_s = median_seconds(lambda: classifier(x)) / num_images
        game = ModelGame(net.surrogate, net.masker, x[:8], link=net.link, target=target[:8], batch_size=512)
        kernel_s = (
            median_seconds(
                lambda: kernel_shap(
                    game, net.num_players, threshold=None, max_evaluations=budget, batch_size=256
                ),
                repeats=1,
            )
            / 8
        )
    return {
        "num_players": net.num_players,
        "num_images": num_images,
        **truth_info,
        "classifier_test_accuracy": classifier_accuracy,
        "surrogate_test_accuracy_all_players": surrogate_accuracy,
        "explainer_error": comparison.explainer,
        "budgets": budgets,
        "kernel_shap_error": {str(k): v for k, v in comparison.kernel_shap.items()},
        "matching_budget": comparison.matching_budget,
        **stopping,
        "goal_matching_budget": GOALS[dataset]["matching_budget"],
        "seconds_per_image": {
            "explainer": explainer_s,
            f"kernel_shap@{budget}": kernel_s,
            "classifier_forward": forward_s,
        },
        "speedup_vs_kernel_shap": kernel_s / explainer_s,
        "cost_in_forward_passes": explainer_s / forward_s,
    }


def previous_results() -> dict:
    path = RESULTS / "vit_shapley.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("datasets", {})


def kernel_error(result: dict, budget: int) -> float:
    """KernelSHAP's squared error at ``budget``; NaN where it had no estimate yet (too few coalitions to identify
    every player, e.g. 30 random coalitions for 16 players)."""
    errors = result["kernel_shap_error"].get(str(budget))
    return errors["squared_error"] if errors else float("nan")


def report(results: dict) -> None:
    """Print the table and draw benchmarks/results/vit_shapley.png from the results of every dataset."""
    rows = []
    for name, r in results.items():
        rows.append(
            {
                "dataset": name,
                "players": r["num_players"],
                "clf acc": r["classifier_test_accuracy"],
                "sur acc": r["surrogate_test_accuracy_all_players"],
                "pearson": r["explainer_error"]["pearson"],
                "sq. L2": r["explainer_error"]["squared_error"],
                "KS match": r["matching_budget"],
                "speedup": r["speedup_vs_kernel_shap"],
                "cost (fwd)": r["cost_in_forward_passes"],
            }
        )
    print_table(rows, list(rows[0]))
    every_budget = sorted({b for budgets in BUDGETS.values() for b in budgets})
    fig = curves(
        {f"KernelSHAP ({n})": [kernel_error(r, b) for b in every_budget] for n, r in results.items()},
        x=every_budget,
        xlabel="evaluations per image",
        ylabel="squared L2 error vs ground truth",
        logx=True,
        hlines={f"explainer ({n})": r["explainer_error"]["squared_error"] for n, r in results.items()},
        title="ViT Shapley / FastSHAP explainer vs KernelSHAP",
    )
    fig.axes[0].set_yscale("log")
    save_figure(fig, RESULTS / "vit_shapley.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["digits", "shapes"], choices=DATASETS)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument(
        "--truth-evaluations",
        type=int,
        default=100_000,
        help="cap on KernelSHAP evaluations per image for the ground truth beyond 20 players",
    )
    parser.add_argument(
        "--truth-threshold",
        type=float,
        default=0.01,
        help="mnist: run the ground truth's KernelSHAP until max std / range of values is below this for every image",
    )
    parser.add_argument(
        "--truth-only",
        action="store_true",
        help="only compute and cache the ground truth and KernelSHAP's estimates (needs the surrogate, not the "
        "explainer); writes no results",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.truth_only:
        for name in args.datasets:
            ensure_trained(name, ("classifier", "surrogate"))
            net = surrogate_only_net(name).to(args.device)
            _, _, x, target = explained_images(name, net, args.num_images, args.device)
            _, info, _ = truth_and_kernel_shap(
                name, net, x, target, args.truth_evaluations, args.truth_threshold
            )
            print(f"[vit_shapley] {name}: {info}")
        return
    # Datasets run separately keep each other's results: the file holds the latest run of each dataset.
    results = previous_results()
    for name in args.datasets:
        result = run_dataset(name, args.num_images, args.device, args.truth_evaluations, args.truth_threshold)
        results[name] = result | {"environment": environment()}
    write_json("vit_shapley", {"datasets": results, "budgets": BUDGETS})

    report(results)


if __name__ == "__main__":
    main()
