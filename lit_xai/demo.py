"""``make demo``: ViT Shapley end to end on scikit-learn's digits, on a CPU, in minutes.

1. train a tiny ViT classifier (8x8 images, 2x2 patches: 16 players);
2. fine-tune it into a surrogate that tolerates missing patches;
3. train the amortized explainer;
4. compare the explainer with exact Shapley values of the surrogate (all 2^16 coalitions) on held-out images and
   with KernelSHAP at growing budgets, print the table, and write ``outputs/demo/report.md`` with a figure.

Each stage runs the same command a user would (``python train.py fit --config configs/digits/<stage>.yaml``) and is
skipped when its checkpoint already exists (``--retrain`` trains again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lit_xai.cli import finish_wandb_run
from lit_xai.cli import main as cli_main
from lit_xai.io import atomic_write_text

STAGES = ("classifier", "surrogate", "explainer")
OUTPUTS = Path("outputs")  # where configs/digits/*.yaml write their checkpoints
KERNEL_BUDGETS = [32, 64, 128, 256, 512, 1024, 2048]


def checkpoint_of(stage: str, root: Path) -> Path:
    return root / "digits" / stage / "checkpoints" / "best.ckpt"


def train_stages(root: Path, retrain: bool, fast: bool) -> None:
    for stage in STAGES:
        checkpoint = checkpoint_of(stage, root)
        if checkpoint.is_file() and not retrain:
            print(f"[demo] {stage}: reusing {checkpoint}")
            continue
        print(f"[demo] {stage}: python train.py fit --config configs/digits/{stage}.yaml")
        args = ["fit", "--config", f"configs/digits/{stage}.yaml"]
        if fast:
            args += [
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.limit_val_batches",
                "1",
            ]
        try:
            cli_main(args)
        finally:
            finish_wandb_run()  # each stage in its own W&B run, as when run from the shell


def evaluate(root: Path, out: Path, num_images: int) -> dict:
    """Explainer vs exact Shapley values and KernelSHAP on held-out digits; returns the numbers."""
    from lit_xai.algorithms.vit_shapley import ExplainerModule
    from lit_xai.algorithms.vit_shapley.evaluation import compare_with_kernel_shap, ground_truth_shapley
    from lit_xai.checkpoint_identity import load_stage
    from lit_xai.data import DigitsDataModule
    from lit_xai.data.base import class_names
    from lit_xai.models import backbone_from_checkpoint
    from lit_xai.viz import explanation_grid, prediction_caption

    data = DigitsDataModule(seed=0)
    data.setup("test")
    x_all = torch.stack([data.test_dataset[i]["input"] for i in range(len(data.test_dataset))])
    y_all = torch.stack([data.test_dataset[i]["target"] for i in range(len(data.test_dataset))])
    classifier, _ = backbone_from_checkpoint(checkpoint_of("classifier", root))
    explainer = load_stage(ExplainerModule, checkpoint_of("explainer", root)).eval()
    net = explainer.net
    with torch.no_grad():
        classifier_accuracy = (classifier.eval()(x_all).argmax(-1) == y_all).float().mean().item()
        surrogate_accuracy = (net.grand(x_all).argmax(-1) == y_all).float().mean().item()

    x, y = x_all[:num_images], y_all[:num_images]
    with torch.no_grad():
        probs = net.grand(x)
    target = probs.argmax(-1)
    start = time.perf_counter()
    truth = ground_truth_shapley(net, x, target)
    exact_seconds = (time.perf_counter() - start) / num_images
    comparison = compare_with_kernel_shap(net, x, target, truth, KERNEL_BUDGETS)

    players = net.players
    shown = min(6, num_images)
    names = class_names(data)
    captions = [
        prediction_caption(int(target[i]), float(probs[i, target[i]]), int(y[i]), names) for i in range(shown)
    ]
    figure = out / "explanations.png"
    explanation_grid(
        x[:shown],
        {
            "explainer (1 pass)": players.upsample(net.attribute(x[:shown], target[:shown])),
            "exact Shapley (65,536 passes)": players.upsample(truth[:shown]),
        },
        titles=captions,
        path=figure,
    )
    return {
        "classifier_test_accuracy": classifier_accuracy,
        "surrogate_test_accuracy_all_patches": surrogate_accuracy,
        "num_images": num_images,
        "explainer_vs_exact": comparison.explainer,
        "kernel_shap_vs_exact": {str(k): v for k, v in comparison.kernel_shap.items()},
        "kernel_shap_matching_budget": comparison.matching_budget,
        "explainer_seconds_per_image": comparison.explainer_seconds_per_image,
        "exact_seconds_per_image": exact_seconds,
        "figure": str(figure),
    }


def report(results: dict) -> str:
    e = results["explainer_vs_exact"]
    lines = [
        "# lit_xai demo: ViT Shapley on digits",
        "",
        f"Classifier test accuracy: {results['classifier_test_accuracy']:.3f}; surrogate with all patches: "
        f"{results['surrogate_test_accuracy_all_patches']:.3f}.",
        "",
        f"Explainer against exact Shapley values of the surrogate ({results['num_images']} held-out images, "
        "predicted class, probabilities):",
        "",
        "| estimator | evaluations / image | squared L2 error | Pearson | Spearman | sign agreement |",
        "|---|---|---|---|---|---|",
        f"| explainer | 2 passes (explainer + surrogate v(all)) | {e['squared_error']:.2e} | {e['pearson']:.3f} | {e['spearman']:.3f} | "
        f"{e['sign_agreement']:.3f} |",
    ]
    for budget, k in results["kernel_shap_vs_exact"].items():
        lines.append(
            f"| KernelSHAP | {budget} | {k['squared_error']:.2e} | {k['pearson']:.3f} | {k['spearman']:.3f} | "
            f"{k['sign_agreement']:.3f} |"
        )
    match = results["kernel_shap_matching_budget"]
    lines += [
        "",
        f"KernelSHAP needs {match if match else 'more than ' + str(KERNEL_BUDGETS[-1])} evaluations per image to "
        "match the explainer's squared error.",
        f"Explainer: {1000 * results['explainer_seconds_per_image']:.2f} ms per image (batched); exact Shapley values: "
        f"{results['exact_seconds_per_image']:.2f} s per image.",
        "",
        "![explanations](explanations.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report-dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument(
        "--num-images", type=int, default=16, help="held-out images compared with exact values"
    )
    parser.add_argument("--retrain", action="store_true", help="train every stage again")
    parser.add_argument(
        "--fast", action="store_true", help="a few steps per stage (smoke test, not a result)"
    )
    args = parser.parse_args(argv)
    train_stages(OUTPUTS, args.retrain, args.fast)
    results = evaluate(OUTPUTS, args.report_dir, args.num_images)
    text = report(results)
    atomic_write_text(args.report_dir / "report.md", text)
    atomic_write_text(args.report_dir / "results.json", json.dumps(results, indent=2))
    print(text)
    print(f"[demo] wrote {args.report_dir / 'report.md'}")
    return results


if __name__ == "__main__":
    main()
