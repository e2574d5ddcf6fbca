"""Random translation of training images, keyed by ``(seed, epoch, index)`` so a resumed run sees the same shifts.

Small random shifts are the classic MNIST augmentation (LeCun et al., 1998; Simard et al., 2003): a ViT trained
from scratch on a few thousand digits overfits without them. The shift of sample ``i`` in epoch ``e`` is drawn from
a generator seeded by ``(seed, e, i)`` -- not from a global generator -- so it does not depend on which samples came
before it, and a run resumed mid-epoch (:mod:`lit_xai.data.resumable`) trains on exactly the images the
uninterrupted run would. :class:`~lit_xai.data.resumable.EpochShuffleSampler` forwards ``set_epoch`` to the dataset.
(Under DDP Lightning replaces that sampler with its own, which does not forward the epoch: every epoch then sees the
same shift of each image.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["RandomShift"]


class RandomShift(Dataset):
    """Wrap a dict dataset so its ``"input"`` images are translated by up to ``max_shift`` pixels per axis.

    Vacated pixels take ``fill`` (the background value, e.g. ``(0 - mean) / std`` for standardised digits).

    Args:
        dataset: Returns dicts with ``"input"`` of shape ``(C, H, W)``; other keys pass through (an
            ``"annotation"`` would no longer be aligned, so such datasets are refused).
        max_shift: Largest translation in pixels along each axis (uniform over ``-max_shift..max_shift``).
        fill: Value of the pixels shifted in.
        seed: Seed of the shifts.
    """

    def __init__(self, dataset: Dataset, max_shift: int, fill: float = 0.0, seed: int = 0):
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}.")
        self.dataset = dataset
        self.max_shift = int(max_shift)
        self.fill = float(fill)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def shift_of(self, index: int) -> tuple[int, int]:
        """The ``(dy, dx)`` translation of sample ``index`` in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        return int(dy), int(dx)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[index])
        if "annotation" in item:
            raise ValueError("RandomShift would misalign the annotation masks; shift them together instead.")
        dy, dx = self.shift_of(index)
        s = self.max_shift
        padded = F.pad(item["input"], (s, s, s, s), value=self.fill)
        height, width = item["input"].shape[-2:]
        item["input"] = padded[..., s - dy : s - dy + height, s - dx : s - dx + width]
        return item
