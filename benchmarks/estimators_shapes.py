"""Black-box estimators at equal budgets on synthetic shapes: which one finds the shape that decides the label?

The second half of issue 16's benchmark (the first, against exact values on digits, is ``benchmarks.estimators``).
``ShapesDataModule`` test images (32x32 RGB) with 4x4-pixel patches as players (64; an 8x8 grid, so h-Shap's
quadtree has three levels), the CNN of ``benchmarks.input_iba`` trained plainly, explained for the true label's
probability with zero filling. At each budget of model evaluations per image (500 and 2,000 by default):

- RISE (Petsiuk et al., BMVC 2018): ``budget`` Bernoulli(1/2) masks; its map ``E[v | player kept]`` carries the
  offset ``E[v]`` on every player, so at the largest budget the centred version from the same masks, Banzhaf by
  maximum sample reuse (``E[v | kept] - E[v | removed]``, Wang & Jia 2023), is scored too;
- KernelSHAP (paired, no stopping rule) and Leverage SHAP (Musco & Witter, ICLR 2025);
- Sobol total indices (Fel et al., NeurIPS 2021): Jansen's estimator, ``budget // (d + 2)`` designs, soft masks;
- HSIC (Novello et al., NeurIPS 2022): ``budget`` designs;

and h-Shap (Teneggi et al., TPAMI 2022; the authors' absolute threshold 0), which chooses its own number of
evaluations: it is run once and its measured count per image is reported next to the others. Every count is taken
by a forward hook on the CNN's first layer (``count_forward_rows``), not from the methods' own bookkeeping.

Scores are those of the Shap-CAM and InputIBA benchmarks (``benchmarks.input_iba.score``): relevance mass, EHR AUC
and pointing game against the deciding shape's mask, insertion (blur) and deletion (zeros) AUC over 2x2-pixel
players; mean and 95 % interval over images. The learned FastSHAP explainer of the shapes configs is not in this
run: training its surrogate and explainer costs about an hour of one CPU core; ``configs/eval/shapes.yaml`` scores
it next to RISE and KernelSHAP.

    python -m benchmarks.estimators_shapes [--num-images 100] [--budgets 500 2000]

Writes ``benchmarks/results/estimators_shapes.json`` after every method; a rerun with the same settings keeps the
rows it finds there and runs only the missing ones (for kept rows the figure's maps are recomputed on its six
images). Then ``estimators_shapes.png`` and the table.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import RESULTS, command_line, environment, print_table, write_json
from benchmarks.input_iba import save_figure, score, train_classifier
from lit_xai.attribution import build_attribution
from lit_xai.data import ShapesDataModule
from lit_xai.evaluation.methods import count_forward_rows
from lit_xai.masking import BaselineFill
from lit_xai.players import PatchGrid

COLUMNS = [
    "method",
    "evaluations",
    "relevance_mass",
    "ehr_auc",
    "pointing_game",
    "insertion_auc",
    "deletion_auc",
]


def estimators(budget: int, d: int) -> dict[str, tuple[str, dict]]:
    """``label -> (attribution name, kwargs)`` spending ``budget`` evaluations per image."""
    return {
        f"RISE @{budget}": ("rise", {"num_masks": budget}),
        f"KernelSHAP @{budget}": ("kernel_shap", {"threshold": None, "max_evaluations": budget}),
        f"Leverage SHAP @{budget}": ("leverage_shap", {"max_evaluations": budget}),
        f"Sobol @{budget}": ("sobol", {"num_designs": max(budget // (d + 2), 1)}),
        f"HSIC @{budget}": ("hsic", {"num_designs": budget}),
    }


def explain(model, grid, masker, name: str, kwargs: dict, x, target) -> tuple[torch.Tensor, float, float]:
    """Pixel map ``(B, H, W)``, measured evaluations per image and seconds per image of one estimator."""
    explainer = build_attribution(name, model, grid, masker=masker, batch_size=1024, **kwargs)
    start = time.perf_counter()
    with count_forward_rows([model]) as rows, torch.no_grad():
        values = explainer.attribute(x, target)
    seconds = (time.perf_counter() - start) / len(x)
    return grid.upsample(values), rows[0] / len(x), seconds


def run(num_images: int, budgets: list[int], train_epochs: int) -> dict:
    start = time.perf_counter()
    data = ShapesDataModule(num_train=3000, num_val=100, num_test=num_images, batch_size=64, seed=0)
    data.setup("fit")
    model, accuracy, train_seconds = train_classifier(data, [16, 32, 64], train_epochs)
    print(
        f"[estimators_shapes] classifier test accuracy {accuracy:.3f} after {train_seconds:.0f} s", flush=True
    )
    test = data.test_dataset
    x, target, annotation = test.inputs, test.targets, test.annotations
    grid = PatchGrid(32, 4)
    masker = BaselineFill(grid, "zeros")
    runs = {label: spec for budget in budgets for label, spec in estimators(budget, grid.num_players).items()}
    runs[f"Banzhaf (RISE's masks) @{max(budgets)}"] = ("banzhaf", {"num_masks": max(budgets)})
    runs["h-Shap (t = 0)"] = ("h_shap", {"threshold": 0.0})
    payload = {
        "description": __doc__.split("\n\n")[0],
        "command": command_line(),
        "dataset": "shapes",
        "players": grid.num_players,
        "images": num_images,
        "model": f"SmallCNN(3, 4, channels=(16, 32, 64)), {train_epochs} epochs, zero filling",
        "model_test_accuracy": accuracy,
        "link": "softmax, true label",
        "budgets": budgets,
        "results": {},
        "environment": environment(),
    }
    payload["results"] = _previous_results(payload)
    shown = [label for label in runs if label.endswith(f"@{max(budgets)}") or label.startswith("h-")]
    rows = slice(0, 6)  # the figure's images
    figure = {}
    for label, (name, kwargs) in runs.items():
        if label in payload["results"]:
            continue
        pixel_map, evaluations, seconds = explain(model, grid, masker, name, kwargs, x, target)
        figure[label] = pixel_map[rows]
        payload["results"][label] = {
            "method": name,
            "kwargs": kwargs,
            "evaluations_per_image": evaluations,
            "seconds_per_image": seconds,
            **score(model, x, target, annotation, pixel_map),
        }
        payload["seconds"] = time.perf_counter() - start
        write_json("estimators_shapes", payload)  # partial results survive a stopped run
        print(
            f"[estimators_shapes] {label}: {evaluations:.0f} evaluations/image, {seconds:.3f} s/image",
            flush=True,
        )
    payload["goals"] = goals(payload["results"], max(budgets))
    write_json("estimators_shapes", payload)
    for label in shown:  # rows kept from an earlier run: their maps only for the figure's images
        if label not in figure:
            figure[label] = explain(model, grid, masker, *runs[label], x[rows], target[rows])[0]
    save_figure(RESULTS / "estimators_shapes.png", x[rows], annotation[rows], {k: figure[k] for k in shown})
    return payload


def _previous_results(payload: dict) -> dict:
    """The rows of an earlier run with the same settings (images, budgets, model), else none."""
    path = RESULTS / "estimators_shapes.json"
    if not path.exists():
        return {}
    previous = json.loads(path.read_text())
    same = all(previous.get(key) == payload[key] for key in ("images", "budgets", "model", "players"))
    return previous.get("results", {}) if same else {}


def _within_interval(scores: dict, reference: dict, key: str) -> bool:
    """The method's mean lies inside the reference's 95 % interval or beyond it on the better side."""
    better_low = key == "deletion_auc"
    mean, ref = scores[key]["mean"], reference[key]
    return mean <= ref["high"] if better_low else mean >= ref["low"]


def goals(results: dict, rise_budget: int) -> dict:
    """Issue 16's shapes goals against RISE at ``rise_budget`` masks."""
    rise = results[f"RISE @{rise_budget}"]
    h_shap = results["h-Shap (t = 0)"]
    out = {
        "h_shap_relevance_mass_at_least_rise_with_quarter_budget": {
            "measured": h_shap["relevance_mass"]["mean"] >= rise["relevance_mass"]["mean"]
            and h_shap["evaluations_per_image"] <= rise["evaluations_per_image"] / 4,
            "h_shap": [h_shap["relevance_mass"]["mean"], h_shap["evaluations_per_image"]],
            "rise": [rise["relevance_mass"]["mean"], rise["evaluations_per_image"]],
            # RISE's offset spreads positive relevance over the whole image; its centred version is the fairer bar
            "banzhaf_from_rise_masks": results[f"Banzhaf (RISE's masks) @{rise_budget}"]["relevance_mass"][
                "mean"
            ],
        }
    }
    for method in ("Sobol", "HSIC"):
        cheap = [r for label, r in results.items() if label.startswith(method)]
        cheap = [r for r in cheap if r["evaluations_per_image"] <= rise["evaluations_per_image"] / 2]
        out[f"{method.lower()}_deletion_within_rise_interval_at_half_budget"] = {
            "measured": any(_within_interval(r, rise, "deletion_auc") for r in cheap),
            "deletion": [(r["evaluations_per_image"], r["deletion_auc"]["mean"]) for r in cheap],
            "rise_deletion": rise["deletion_auc"],
        }
    return out


def report(payload: dict) -> None:
    rows = []
    for label, r in payload["results"].items():
        row = {"method": label, "evaluations": f"{r['evaluations_per_image']:.0f}"}
        for key in COLUMNS[2:]:
            row[key] = f"{r[key]['mean']:.3f} ± {r[key]['half_width']:.3f}"
        rows.append(row)
    print_table(rows, COLUMNS)
    for name, goal in payload.get("goals", {}).items():
        print(f"{name}: {goal['measured']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--budgets", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--train-epochs", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    payload = run(args.num_images, sorted(args.budgets), args.train_epochs)
    report(payload)
    return payload


if __name__ == "__main__":
    main()
