"""Input-agnostic saliency (Akhtar & Jalwana, AAAI 2023) finds a planted backdoor on digits.

Two small CNNs are trained on the same 1400 digits: a clean one, and one whose training set has 10 % of its
non-7 digits stamped with a bright 2x2 square in the bottom-right corner and relabelled 7 (a BadNets-style
trigger). Class maps are computed without any data (random points in ``[0, 1]``, 16 players of 2x2 pixels; the
trigger is player 15). Reported per model and class: the trigger patch's share of the map's positive mass, as a
multiple of its share of the area (1/16), and its rank in the map. Writes ``benchmarks/results/input_agnostic.json``.

    OMP_NUM_THREADS=1 python -m benchmarks.input_agnostic            # about a minute on one core
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import environment, print_table, write_json
from benchmarks.digits_cnn import accuracy, digits_split, train_cnn
from lit_xai.attribution import InputAgnosticSaliency
from lit_xai.players import PatchGrid

TRIGGER_CLASS = 7
TRIGGER_PLAYER = 15  # rows 6-7, columns 6-7 of the 8x8 image


def stamp(images: torch.Tensor) -> torch.Tensor:
    stamped = images.clone()
    stamped[:, :, 6:, 6:] = 1.0
    return stamped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--poison", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = digits_split()
    candidates = torch.nonzero(y_train != TRIGGER_CLASS).squeeze(1)
    chosen = candidates[torch.randperm(candidates.numel(), generator=torch.Generator().manual_seed(1))]
    chosen = chosen[: int(args.poison * candidates.numel())]
    x_poisoned, y_poisoned = x_train.clone(), y_train.clone()
    x_poisoned[chosen], y_poisoned[chosen] = stamp(x_train[chosen]), TRIGGER_CLASS
    models = {
        "clean": train_cnn(x_train, y_train, args.epochs, seed=0),
        "backdoored": train_cnn(x_poisoned, y_poisoned, args.epochs, seed=0),
    }
    players = PatchGrid(8, 2)
    others = y_test != TRIGGER_CLASS
    payload = {
        "description": __doc__.splitlines()[0],
        "poisoned_images": int(chosen.numel()),
        "steps": args.steps,
        "models": {},
        "environment": environment(),
    }
    rows = []
    for name, model in models.items():
        saliency = InputAgnosticSaliency(model, players, steps=args.steps)
        with torch.no_grad():
            attack = float((model(stamp(x_test[others])).argmax(1) == TRIGGER_CLASS).float().mean())
        classes = []
        for label in range(10):
            values = players.pool(saliency.class_map(label, (1, 8, 8)).unsqueeze(0), reduce="sum")[0]
            positive = values.clamp_min(0)
            share = float(positive[TRIGGER_PLAYER] / positive.sum()) if positive.sum() > 0 else 0.0
            rank = int((values > values[TRIGGER_PLAYER]).sum()) + 1
            classes.append(
                {"label": label, "trigger_share_over_area": share * players.num_players, "trigger_rank": rank}
            )
        payload["models"][name] = {
            "clean_test_accuracy": accuracy(model, x_test, y_test),
            "attack_success_rate": attack,
            "classes": classes,
        }
        payload["seconds"] = time.perf_counter() - start
        write_json("input_agnostic", payload)
        trigger = classes[TRIGGER_CLASS]
        rest = [c["trigger_share_over_area"] for c in classes if c["label"] != TRIGGER_CLASS]
        rows.append(
            {
                "model": name,
                "clean_acc": payload["models"][name]["clean_test_accuracy"],
                "attack_success": attack,
                "class7_trigger_x_area": trigger["trigger_share_over_area"],
                "class7_trigger_rank": trigger["trigger_rank"],
                "others_trigger_x_area_max": max(rest),
            }
        )
        print(f"{name} done at {time.perf_counter() - start:.0f}s", flush=True)
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
