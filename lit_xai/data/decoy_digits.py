"""Decoy digits: scikit-learn digits with a label-revealing corner patch (a small "Decoy MNIST").

Ross, Hughes & Doshi-Velez, *Right for the Right Reasons: Training Differentiable Models by Constraining
their Explanations*, IJCAI 2017. Their Decoy MNIST puts a 4x4 gray patch in a random corner of each 28x28
digit; in training its gray level is ``255 - 25 * y`` (so it reveals the label), at test time it is the
level of a random class, so a model that learned the shortcut fails there.

Our digits are 8x8 and their ink reaches the image edge, so a corner patch would overlap the digit. To copy
MNIST's layout (a 20x20 digit box inside a 4-pixel empty border) each digit is padded with a zero ``border``
(4 by default), giving 16x16 images, and the ``decoy_size`` x ``decoy_size`` (4x4) patch lies entirely in a
corner of the border, so it never touches the digit. ``upscale`` > 1 first enlarges the digit with nearest
neighbours (exact pixel values); the default 1 keeps the patch large relative to the digit, which is what
makes a plain (50, 30) MLP take the shortcut as it does on Decoy MNIST (with upscale=2 its test accuracy
falls far less). Pixels are in ``[0, 1]`` (digit values / 16, patch level ``(255 - 25 y) / 255``) and are
**not** standardised: the background must stay exactly zero so the patch stands out.

``annotation`` marks the relevant region: the digit's box (``annotation="box"``, default; the decoy is
outside it, matching Ross's mask that only forbids the patch) or only the digit's ink pixels
(``annotation="ink"``). Validation is decoyed like training (so model selection cannot see the shortcut);
only the test split has random patch levels. ``decoy=False`` gives the clean images with the same splits
for the "clean model" baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_xai.data.base import (
    SplitDataModule,
    TensorDictDataset,
    check_fractions,
    split_seed,
    stratified_split,
)
from lit_xai.data.digits import load_digit_images


def decoy_level(label: torch.Tensor) -> torch.Tensor:
    """Ross et al.'s patch gray level for a class, scaled to ``[0, 1]``: ``(255 - 25 * label) / 255``."""
    return (255.0 - 25.0 * label.float()) / 255.0


def add_decoy_patches(
    images: torch.Tensor, levels: torch.Tensor, corners: torch.Tensor, decoy_size: int
) -> torch.Tensor:
    """Return a copy of ``images`` with a square patch of gray ``levels`` in the given ``corners``.

    Args:
        images: ``(N, 1, H, W)`` images.
        levels: ``(N,)`` patch intensities.
        corners: ``(N,)`` corner index: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
        decoy_size: Side of the patch in pixels.

    Returns:
        ``(N, 1, H, W)`` images with the patches written in.
    """
    n, _, h, w = images.shape
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    bottom = (corners >= 2).view(n, 1, 1)
    right = (corners % 2 == 1).view(n, 1, 1)
    in_rows = torch.where(bottom, rows >= h - decoy_size, rows < decoy_size)
    in_cols = torch.where(right, cols >= w - decoy_size, cols < decoy_size)
    patch = (in_rows & in_cols).unsqueeze(1)
    return torch.where(patch, levels.view(n, 1, 1, 1).to(images.dtype), images)


class DecoyDigitsDataModule(SplitDataModule):
    """Digits with a decoy corner patch; input ``(1, S, S)`` with ``S = 8 * upscale + 2 * border``.

    Batches carry ``annotation`` ``(B, S, S)``. Splits are identical to :class:`DigitsDataModule` with the
    same ``seed`` and fractions, and identical between ``decoy=True`` and ``decoy=False``.

    Args:
        batch_size: Samples per batch.
        val_fraction: Share of each class used for validation.
        test_fraction: Share of each class used for testing.
        seed: Seed of the split, of the patch corners and test levels, and of the training shuffle.
        num_workers: DataLoader worker processes.
        decoy: Add the patches; ``False`` gives the clean images (same splits).
        upscale: Nearest-neighbour upsampling factor of the 8x8 digits.
        border: Width of the zero border around the digit box, in pixels.
        decoy_size: Side of the decoy patch; must fit in the border.
        annotation: ``"box"`` (the digit's box) or ``"ink"`` (the digit's non-zero pixels).
        pin_memory: Pin host memory for faster GPU transfer.
    """

    num_classes = 10
    classes = tuple(str(digit) for digit in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        decoy: bool = True,
        upscale: int = 1,
        border: int = 4,
        decoy_size: int = 4,
        annotation: str = "box",
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_fractions(val_fraction, test_fraction)
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}.")
        if not 1 <= decoy_size <= border:
            raise ValueError(
                f"decoy_size ({decoy_size}) must be between 1 and border ({border}) so the decoy patch "
                "stays outside the digit; raise border or lower decoy_size."
            )
        if annotation not in ("box", "ink"):
            raise ValueError(f"annotation must be 'box' or 'ink', got {annotation!r}.")
        self.save_hyperparameters()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.decoy = decoy
        self.upscale = upscale
        self.border = border
        self.decoy_size = decoy_size
        self.annotation = annotation

    @property
    def image_size(self) -> int:
        return 8 * self.upscale + 2 * self.border

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.image_size, self.image_size)

    def build_datasets(self) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
        images, labels = load_digit_images()
        images = F.interpolate(images, scale_factor=self.upscale, mode="nearest")
        images = F.pad(images, [self.border] * 4)
        if self.annotation == "ink":
            masks = (images[:, 0] > 0).float()
        else:
            masks = torch.zeros_like(images[:, 0])
            masks[:, self.border : -self.border, self.border : -self.border] = 1.0
        splits = stratified_split(labels, self.val_fraction, self.test_fraction, self.seed)
        self.split_indices = splits
        datasets = []
        for split_id, idx in enumerate(splits):
            x, y = images[idx], labels[idx]
            # Corners and test levels are drawn even when decoy=False so both variants share one stream.
            gen = torch.Generator().manual_seed(split_seed(self.seed, split_id))
            corners = torch.randint(0, 4, (len(idx),), generator=gen)
            random_labels = torch.randint(0, 10, (len(idx),), generator=gen)
            if self.decoy:
                is_test = split_id == 2
                x = add_decoy_patches(
                    x, decoy_level(random_labels if is_test else y), corners, self.decoy_size
                )
            datasets.append(TensorDictDataset(x, y, masks[idx]))
        return tuple(datasets)
