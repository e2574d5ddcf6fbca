"""Input-agnostic saliency (Akhtar & Jalwana, AAAI 2023) finds a planted backdoor on digits.

Two small CNNs are trained on the same 1400 digits: a clean one, and one whose training set has 10 % of its
non-7 digits stamped with a bright 2x2 square in the bottom-right corner and relabelled 7 (a BadNets-style
trigger). Class maps are computed without any data (random points in ``[0, 1]``, 16 players of 2x2 pixels; the
trigger is player 15). Reported per model and class: the trigger patch's share of the map's positive mass, as a
multiple of its share of the area (1/16), and its rank in the map. Then, on decoy digits (a class-revealing gray
patch in a random corner), the plain and RRR MLPs of ``configs/decoy_digits`` (seed 0): the decoy corners' share of
each class map's absolute mass over their share of the area. Writes ``benchmarks/results/input_agnostic.json``.

    OMP_NUM_THREADS=1 python -m benchmarks.input_agnostic            # a few minutes on one core (--skip-decoy: seconds)
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


def decoy_part(steps: int) -> dict:
    """Plain vs RRR MLPs on decoy digits (their training configs, seed 0): the decoy corners' share of each class
    map's absolute mass, as a multiple of their share of the area (four 4x4 corners of 16x16: 1/4)."""
    from benchmarks.supervision import CONFIGS, DECOY_CONFIGS, build, fit, read_config, test_tensors

    corners = torch.zeros(16, 16, dtype=torch.bool)
    for rows in (slice(0, 4), slice(12, 16)):
        for cols in (slice(0, 4), slice(12, 16)):
            corners[rows, cols] = True
    area = float(corners.float().mean())
    out = {"decoy_area_share": area, "models": {}}
    for method in ("plain", "rrr"):
        config = read_config(CONFIGS / "decoy_digits" / f"{DECOY_CONFIGS[method]}.yaml")
        module, datamodule = build(config, 0)
        model = fit(module, datamodule, config["trainer"]["max_epochs"])
        _, decoy_data = build(config, 0, decoy=True)
        test = test_tensors(decoy_data)
        x = test["input"]
        saliency = InputAgnosticSaliency(
            model, PatchGrid(16, 1), steps=steps, low=float(x.min()), high=float(x.max())
        )
        ratios = []
        for label in range(10):
            # Absolute mass: the decoy's gray level encodes the class (bright for 0, dark for 9), so for some
            # classes its evidence is a darker patch, a negative value in the map.
            magnitude = saliency.class_map(label, tuple(x.shape[1:]))[0].abs()
            total = float(magnitude.sum())
            ratios.append(float(magnitude[corners].sum()) / total / area if total > 0 else 0.0)
        with torch.no_grad():
            decoy_accuracy = float((model(x).argmax(1) == test["target"]).float().mean())
        out["models"][method] = {
            "accuracy_decoy_test": decoy_accuracy,
            "decoy_share_over_area": ratios,
            "mean_decoy_share_over_area": sum(ratios) / len(ratios),
        }
        print(method, out["models"][method], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--poison", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--skip-decoy", action="store_true", help="only the trigger part (seconds)")
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
    if not args.skip_decoy:
        payload["decoy_digits"] = decoy_part(args.steps)
        payload["seconds"] = time.perf_counter() - start
        write_json("input_agnostic", payload)


if __name__ == "__main__":
    main()
