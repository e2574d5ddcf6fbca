"""Shap-CAM vs GradCAM on synthetic shapes with ground-truth masks (issue 17's first benchmark).

Zheng et al. (ECCV 2022) claim that weighting a CAM's channels by their Shapley values localises better than
GradCAM's mean gradients. On ``ShapesDataModule`` the pixels that decide the label are known (the red shape), so the
claim is measured exactly: effective heat ratio AUC, relevance mass and the pointing game, plus deletion (to zeros)
over 2x2-pixel players, with the helpers of ``benchmarks/input_iba.py`` (same classifier training, same scoring).

Shap-CAM runs at two layers of the classifier: ``features`` (64 channels, 8x8, the last conv stage) and ``stem.6``
(32 channels, 16x16, the second stage's ReLU), each in two forms: 8 contiguous channel groups with exact Shapley
values (256 coalitions per image), and every channel its own player with KernelSHAP at a fixed budget
(``--kernel-evaluations`` coalitions per image; its std ratio is recorded). Missing channels are zeroed; the score
is the target logit, the scale GradCAM differentiates. At ``features`` the game is additive (global average pooling
and a linear head follow), so per-channel Shap-CAM is exactly a CAM with weights ``W[t, k] mean(A_k)``: GradCAM's
weights ``W[t, k] / hw`` rescaled by each channel's mean activation. At ``stem.6`` the channels interact.

``python -m benchmarks.shap_cam`` writes ``benchmarks/results/shap_cam.json`` and ``shap_cam.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, command_line, environment, print_table, write_json  # noqa: E402
from benchmarks.input_iba import save_figure, score, timed, train_classifier  # noqa: E402
from lit_xai.attribution import GradCAM, ShapCAM  # noqa: E402
from lit_xai.data import ShapesDataModule  # noqa: E402
from lit_xai.players import PatchGrid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100, help="test images explained and scored")
    parser.add_argument("--train-epochs", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 64])
    parser.add_argument("--groups", type=int, default=8, help="channel groups for exact Shap-CAM")
    parser.add_argument("--kernel-evaluations", type=int, default=2048, help="KernelSHAP budget per image")
    parser.add_argument(
        "--layers", nargs="+", default=["features", "stem.6"], help="SmallCNN layers to explain at"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    data = ShapesDataModule(num_train=3000, num_val=100, num_test=args.num_images, batch_size=64, seed=0)
    data.setup("fit")
    model, accuracy, train_seconds = train_classifier(data, args.channels, args.train_epochs)
    print(f"classifier: test accuracy {accuracy:.3f} after {train_seconds:.0f} s", flush=True)
    test = data.test_dataset
    x, target, annotation = test.inputs, test.targets, test.annotations
    pixels = PatchGrid(32, 1)
    results, figure = {}, {}
    for layer in args.layers:
        results[layer] = run_layer(model, pixels, layer, args, x, target, annotation)
        figure.update({f"{name} @ {layer}": m for name, m in results[layer].pop("maps").items()})
    save_figure(RESULTS / "shap_cam.png", x, annotation, figure)
    payload = {
        "description": "Shap-CAM vs GradCAM on ShapesDataModule test images (target = true label), per layer",
        "command": command_line(),
        "num_images": len(x),
        "classifier": {"channels": args.channels, "epochs": args.train_epochs, "test_accuracy": accuracy},
        "kernel_evaluations_per_image": args.kernel_evaluations,
        "results": results,
        "total_wall_seconds": time.perf_counter() - start,
        "environment": environment(),
    }
    goals = {layer: r["goals"] for layer, r in results.items()}
    print(f"wrote {write_json('shap_cam', payload)}; goals: {goals}")


def run_layer(model, pixels, layer: str, args, x, target, annotation) -> dict:
    """GradCAM, exact grouped Shap-CAM and per-channel KernelSHAP Shap-CAM at one layer, scored."""
    kernel = ShapCAM(
        model, pixels, layer=layer, max_evaluations=args.kernel_evaluations, threshold=None, batch_size=1024
    )
    explainers = {
        "GradCAM": GradCAM(model, pixels, layer=layer),
        f"Shap-CAM exact ({args.groups} groups)": ShapCAM(
            model, pixels, layer=layer, num_groups=args.groups, batch_size=1024
        ),
        "Shap-CAM KernelSHAP (each channel)": kernel,
    }
    maps, seconds = {}, {}
    for name, explainer in explainers.items():
        result, wall, cpu = timed(lambda e=explainer: e.attribute_pixels(x, target))
        maps[name] = result.detach()
        seconds[name] = {"wall_per_image": wall / len(x), "cpu_per_image": cpu / len(x)}
        print(f"{layer} {name}: {wall / len(x):.3f} s/image", flush=True)
    ratio = kernel.last_result.ratio
    scores = {name: score(model, x, target, annotation, m) for name, m in maps.items()}
    rows = [{"method": name, **{k: v["mean"] for k, v in s.items()}} for name, s in scores.items()]
    print(f"layer {layer}:")
    print_table(
        rows, ["method", "ehr_auc", "relevance_mass", "pointing_game", "insertion_auc", "deletion_auc"]
    )
    base = scores["GradCAM"]
    goals = {
        name: {
            "ehr_at_least_gradcam": s["ehr_auc"]["mean"] >= base["ehr_auc"]["mean"],
            "pointing_game_at_least_gradcam": s["pointing_game"]["mean"] >= base["pointing_game"]["mean"],
        }
        for name, s in scores.items()
        if name != "GradCAM"
    }
    return {
        "channel_players": int(kernel.last_result.values.shape[1]),
        "kernel_shap_std_ratio": {"median": float(ratio.median()), "max": float(ratio.max())},
        "scores": scores,
        "seconds": seconds,
        "goals": goals,
        "maps": maps,
    }


if __name__ == "__main__":
    main()
