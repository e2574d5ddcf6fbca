"""scikit-learn's handwritten digits (UCI optical recognition of handwritten digits) as a DataModule.

1,797 grayscale 8x8 images with integer values 0..16, ten classes; bundled with scikit-learn, so nothing is
downloaded. Convention: pixels are divided by 16 to lie in ``[0, 1]``; with ``normalize=True`` (default)
they are then standardised with one scalar mean and standard deviation computed on the *training* split
only (exposed as ``mean`` / ``std``), which is what a CNN or ViT trains best on. Splits are stratified and
fixed by ``seed`` (see :func:`lit_xai.data.base.stratified_split`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from lit_xai.data.base import SplitDataModule, TensorDictDataset, check_fractions, split_standardized


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Return all digits as ``(images (1797, 1, 8, 8) float in [0, 1], labels (1797,) long)``."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(bunch.target.astype(np.int64))


class DigitsDataModule(SplitDataModule):
    """8x8 handwritten digits, input ``(1, 8, 8)``, 10 classes, no annotation.

    Args:
        batch_size: Samples per batch.
        val_fraction: Share of each class used for validation.
        test_fraction: Share of each class used for testing.
        seed: Seed of the stratified split and of the training shuffle.
        num_workers: DataLoader worker processes.
        normalize: Standardise with the training split's scalar mean/std (after scaling to ``[0, 1]``).
        pin_memory: Pin host memory for faster GPU transfer.
    """

    num_classes = 10
    input_shape = (1, 8, 8)
    classes = tuple(str(digit) for digit in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        normalize: bool = True,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.normalize = normalize
        self.mean: float | None = None
        self.std: float | None = None

    def build_datasets(self) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
        images, labels = load_digit_images()
        datasets, self.split_indices, self.mean, self.std = split_standardized(
            images, labels, self.val_fraction, self.test_fraction, self.seed, self.normalize
        )
        return datasets
