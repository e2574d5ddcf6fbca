"""The small digits CNN shared by the evaluation-science benchmarks (sanity checks, soundness, input-agnostic
saliency): a fixed split of the 1797 sklearn digits (8x8, values in [0, 1], blank background 0) and a plain
training loop, seconds on one core."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.data.digits import load_digit_images
from lit_xai.models.small import SmallCNN

CHANNELS = (32, 64)
NUM_TRAIN = 1400


def digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: 1400 training and 397 test digits."""
    images, labels = load_digit_images()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
    return images[train], labels[train], images[test], labels[test]


def train_cnn(
    images: Tensor,
    labels: Tensor,
    epochs: int,
    seed: int = 0,
    lr: float = 3e-3,
    channels: tuple[int, ...] = CHANNELS,
) -> SmallCNN:
    """A SmallCNN (by default channels 32/64, ~19k parameters) trained with Adam, batch 64, returned in eval mode."""
    torch.manual_seed(seed)
    model = SmallCNN(1, 10, channels=channels)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(images.shape[0]).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimiser.step()
    return model.eval()


def accuracy(model: torch.nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())
