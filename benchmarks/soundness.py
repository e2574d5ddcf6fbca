"""Completeness and soundness (Gupta et al., NeurIPS 2022) of attribution methods on a small CNN trained on digits.

For 64 held-out digits every method explains all ten classes (16 players: 2x2 patches, zero fill = the blank
background). Each class's map is scored by its insertion curve (players added most-important first), as in the
authors' evaluation of real-valued maps: completeness of the predicted class's map (does it keep the evidence?)
and soundness of the other nine maps (do they certify a class the network does not see?). Writes
``benchmarks/results/soundness.json`` after every method and prints a table.

    OMP_NUM_THREADS=1 python -m benchmarks.soundness            # about a minute on one core
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import environment, print_table, write_json
from benchmarks.digits_cnn import accuracy, digits_split, train_cnn
from lit_xai.attribution import build_attribution
from lit_xai.masking import BaselineFill
from lit_xai.metrics.functional import completeness_soundness
from lit_xai.players import PatchGrid

METHODS = {
    "gradient": {},
    "integrated_gradients": {"steps": 32},
    "smoothgrad": {},
    "leave_one_out": {},
    "rise": {"num_masks": 500},
    "input_agnostic": {"steps": 100},
    "random": {},
}
SCORES = ("completeness", "soundness", "worst_soundness")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--probes", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = digits_split()
    model = train_cnn(x_train, y_train, args.epochs, seed=0)
    x = x_test[: args.probes]
    players = PatchGrid(8, 2)
    masker = BaselineFill(players)
    payload = {
        "description": __doc__.splitlines()[0],
        "test_accuracy": accuracy(model, x_test, y_test),
        "probes": args.probes,
        "players": players.num_players,
        "floors": {"epsilon": 0.1, "alpha": 1.0, "beta": 0.1},
        "methods": {},
        "environment": environment(),
    }
    rows = []
    for name, options in METHODS.items():
        explainer = build_attribution(name, model, players, masker=masker, **options)
        maps = torch.stack([explainer.attribute(x, c) for c in range(10)], dim=-1)  # (B, d, 10)
        scores = completeness_soundness(model, masker, x, maps, generator=torch.Generator().manual_seed(0))
        summary = {k: float(scores[k].mean()) for k in SCORES}
        predicted = scores["probability"].argmax(1)
        others = torch.ones_like(scores["evidence"], dtype=torch.bool).scatter(1, predicted[:, None], False)
        summary["evidence_predicted"] = float(scores["evidence"].gather(1, predicted[:, None]).mean())
        summary["evidence_others"] = float(scores["evidence"][others].mean())
        summary["probability_others"] = float(scores["probability"][others].mean())
        payload["methods"][name] = summary
        payload["seconds"] = time.perf_counter() - start
        write_json("soundness", payload)
        rows.append({"method": name, **summary})
        print(f"{name} done at {time.perf_counter() - start:.0f}s", flush=True)
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
