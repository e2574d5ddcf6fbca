"""Sanity checks (Adebayo et al., NeurIPS 2018) of attribution methods on a small CNN trained on digits.

A CNN (SmallCNN, channels 32/64, ~19k parameters) is trained on 1400 digits (8x8, values in [0, 1]); a second copy
is trained on the same images with permuted labels (data randomisation). For 64 held-out digits and the trained
model's predicted class, each method's maps (64 one-pixel players) are compared with those after

- cascading re-initialisation of the layers from the output down (one row per step),
- independent re-initialisation of each layer,
- training on permuted labels,

by Spearman rank correlation (signed and absolute) and SSIM (3x3 windows). Low similarity passes the check. The
seeded random baseline ignores the model, so it is the control that must fail (similarity 1), as Adebayo et al.'s
edge detector. Also draws ``benchmarks/results/sanity.png`` (similarity after each cascading step). Writes ``benchmarks/results/sanity.json`` (after every method, so a stopped run keeps
what it finished) and prints a table.

    OMP_NUM_THREADS=1 python -m benchmarks.sanity_checks            # about five minutes on one core
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, print_table, write_json
from benchmarks.digits_cnn import accuracy, digits_split, train_cnn
from lit_xai.attribution import build_attribution
from lit_xai.io import atomic_open
from lit_xai.masking import BaselineFill
from lit_xai.players import PatchGrid
from lit_xai.sanity_checks import (
    cascading_randomization,
    independent_randomization,
    map_similarities,
    permuted_labels,
)

METHODS = {
    "gradient": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 32},
    "smoothgrad": {},
    "leave_one_out": {},
    "rise": {"num_masks": 500},
    "random": {},
}
SCORES = ("spearman", "spearman_abs", "ssim")


def save_figure(path: Path, methods: dict) -> None:
    """Mean Spearman (signed, absolute) after each cascading step, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, score in zip(axes, ("spearman", "spearman_abs")):
        for name, result in methods.items():
            steps = result["cascading"]
            ax.plot(range(len(steps) + 1), [1.0] + [s[score] for s in steps], marker="o", label=name)
        layers = ["none"] + [s["layer"] or "(root)" for s in next(iter(methods.values()))["cascading"]]
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"cascading randomisation: {score.replace('_', ' ')}", fontsize=9)
        ax.axhline(0.0, color="grey", linewidth=0.5)
    axes[0].set_ylabel("rank correlation with the trained model's maps")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


def means(steps: list[dict]) -> list[dict]:
    return [{"layer": s["layer"], **{k: float(s[k].mean()) for k in SCORES}} for s in steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--random-label-epochs", type=int, default=200)
    parser.add_argument("--probes", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()

    x_train, y_train, x_test, y_test = digits_split()
    model = train_cnn(x_train, y_train, args.epochs, seed=0)
    shuffled = permuted_labels(y_train, seed=0)
    memoriser = train_cnn(x_train, shuffled, args.random_label_epochs, seed=0)
    models = {
        "trained": {
            "train_accuracy": accuracy(model, x_train, y_train),
            "test_accuracy": accuracy(model, x_test, y_test),
        },
        "random_labels": {
            "train_accuracy_on_permuted_labels": accuracy(memoriser, x_train, shuffled),
            "test_accuracy": accuracy(memoriser, x_test, y_test),
        },
    }
    print(models)

    x = x_test[: args.probes]
    with torch.no_grad():
        target = model(x).argmax(1)
    players = PatchGrid(8, 1)
    masker = BaselineFill(players)  # zeros: the digits' blank background
    grid = players.grid_size
    payload = {
        "description": __doc__.splitlines()[0],
        "models": models,
        "probes": args.probes,
        "players": players.num_players,
        "methods": {},
        "environment": environment(),
    }
    rows = []
    for name, options in METHODS.items():

        def explain(network, inputs, t, name=name, options=options):
            return build_attribution(name, network, players, masker=masker, **options).attribute(inputs, t)

        cascading = means(cascading_randomization(model, x, target, explain, grid=grid))
        independent = means(independent_randomization(model, x, target, explain, grid=grid))
        data = map_similarities(explain(model, x, target), explain(memoriser, x, target), grid)
        data = {k: float(v.mean()) for k, v in data.items()}
        payload["methods"][name] = {"cascading": cascading, "independent": independent, "random_labels": data}
        payload["seconds"] = time.perf_counter() - start
        write_json("sanity", payload)
        row = {"method": name}
        for score in SCORES:  # the whole cascade, the mean over single layers, the permuted-label model
            row[f"cascade_{score}"] = cascading[-1][score]
            row[f"layer_{score}"] = sum(s[score] for s in independent) / len(independent)
            row[f"labels_{score}"] = data[score]
        rows.append(row)
        print(f"{name} done at {time.perf_counter() - start:.0f}s", flush=True)
    print_table(rows, list(rows[0]))
    save_figure(RESULTS / "sanity.png", payload["methods"])


if __name__ == "__main__":
    main()
