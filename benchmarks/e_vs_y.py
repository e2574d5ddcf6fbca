"""Explanation vs prediction (Karimi, Muandet, Kornblith, Schölkopf & Kim, "On the Relationship Between Explanation
and Prediction: A Causal View", ICML 2023, arXiv 2212.06925) on a zoo of small digits CNNs.

The zoo. A seeded random sample of hyperparameters, drawn independently of each other (so each is a randomised
treatment: no confounding between them), over the ranges of the Unterthiner et al. (2020) CNN zoo the paper
analyses: optimiser (SGD, Adam, RMSprop), learning rate (log-uniform 1e-4..1e-1), weight decay (log-uniform
1e-8..1e-2), dropout before the head (uniform 0..0.7), train fraction (0.1, 0.25, 0.5, 1.0 of the training split) and
seed (initialisation, data order and which training digits are kept). Each model is a SmallCNN with channels 8/16
(~1.5k parameters, so exact Shapley values of 16 players stay cheap) trained for a fixed number of epochs by
``ClassifierModule`` (the project's classifier, with the sampled optimiser at a constant learning rate) in one
quiet Lightning run, on the digits of ``DigitsDataModule`` (pixels in [0, 1], blank background 0).

Y and E. On a fixed probe set of held-out digits, Y is the model's prediction (its softmax vector per digit) and
E its explanation of its own predicted class on the 16 players of a 2x2 patch grid, by four methods: gradient
(magnitude), integrated gradients (zero baseline), SmoothGrad and exact Shapley values (2^16 coalitions per
digit, zero fill, softmax probabilities, :func:`lit_xai.ground_truth.shapley_ground_truth`). Accuracy is measured
on all held-out digits. Each finished model's row is appended to ``benchmarks/results/e_vs_y_models.jsonl`` (a
stopped run resumes where it stopped and nothing finished is lost).

The analysis (:mod:`lit_xai.mediation`): the paper measures individual treatment effects as distances between the
potential outcomes of a pair of models (units), for Y and for E. Here, for every pair of models in a bin, the
treatment is the vector of hyperparameter differences and the outcomes are d_Y (mean total-variation distance between
the two models' softmax vectors on the probe digits) and d_E (mean cosine distance between their explanations). A
linear mediation model on the pairs gives, per hyperparameter, the total effect on E, its direct part and the part
mediated by Y, and the direct influence of Y on E (the path Y -> E with the hyperparameters held fixed),
binned by accuracy tertile; ``--analyse-only`` recomputes them from the JSONL without training.

    OMP_NUM_THREADS=1 python -m benchmarks.e_vs_y                  # the zoo (about half an hour on one core)
    OMP_NUM_THREADS=1 python -m benchmarks.e_vs_y --analyse-only   # the mediation analysis only (seconds)
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

from benchmarks.common import RESULTS, environment, quiet_trainer
from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.attribution import build_attribution
from lit_xai.data.digits import DigitsDataModule
from lit_xai.ground_truth import shapley_ground_truth
from lit_xai.masking import BaselineFill
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
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[self.optimiser]
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
                "train_fraction": TRAIN_FRACTIONS[int(torch.randint(len(TRAIN_FRACTIONS), (), generator=generator))],
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
        with open(args.models_file, "a") as handle:  # one line per model, flushed at once: a kill loses only it
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        print(
            f"model {config['index']:3d} {config['optimiser']:7s} lr {config['lr']:.1e} frac "
            f"{config['train_fraction']:.2f} acc {result['accuracy']:.3f} train {row['seconds']['train']:.1f}s "
            f"explain {row['seconds']['explain']:.1f}s total {time.perf_counter() - start:.0f}s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-models", type=int, default=120)
    parser.add_argument("--zoo-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-probe", type=int, default=32)
    parser.add_argument("--first", type=int, default=0, help="train only models first..last-1 of the sample")
    parser.add_argument("--last", type=int, default=None)
    parser.add_argument("--models-file", type=Path, default=MODELS_FILE)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    if not args.analyse_only:
        run_zoo(args)


if __name__ == "__main__":
    main()
