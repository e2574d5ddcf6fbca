"""Shared split and DataLoader code for every lit_xai DataModule.

Every DataModule in :mod:`lit_xai.data` yields dict batches ``{"input": x, "target": y}`` plus
``"annotation"`` (per-pixel or per-feature human importance in ``[0, 1]``, shaped like the input without its
channel axis) when the dataset has one. This module holds the one copy of the code they share:

* :class:`TensorDictDataset` -- an in-memory dataset of aligned tensors that returns such dicts;
* :func:`stratified_split` -- a seeded, per-class train/val/test split of indices;
* :class:`SplitDataModule` -- the Lightning boilerplate: idempotent ``setup``, seeded shuffling of the
  training loader, ``persistent_workers`` when workers are used. Under DDP Lightning swaps in a
  ``DistributedSampler`` for training itself. Validation and test loaders get an unpadded one here: Lightning's
  pads every process's share to the same length with duplicates, so an odd split counted one sample twice and
  ``best.ckpt`` was chosen on other numbers than in one process (each process may now run one batch fewer, which
  evaluation allows: nothing is synchronised per batch).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from lit_xai.data.resumable import EpochShuffleSampler, ResumableDataLoader


def class_names(data: object) -> list[str] | None:
    """The names of the classes of a data module (its ``classes`` or ``class_names``), or ``None``.

    Image folders name classes after their folders, tabular data after the label column's values, the shapes
    after their types; figures, captions, results.json and checkpoints use them instead of indices.

    Example:
        >>> from lit_xai.data import ShapesDataModule
        >>> class_names(ShapesDataModule(num_classes=3)), class_names(object())
        (['square', 'circle', 'triangle'], None)
    """
    for attribute in ("classes", "class_names"):
        try:
            names = getattr(data, attribute, None)
        except (OSError, ValueError):  # data not there yet: names are a courtesy, never an error
            return None
        if isinstance(names, list | tuple) and names:
            return [str(name) for name in names]
    return None


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a ``ValueError`` unless both fractions are in ``[0, 1)`` and leave some training data.

    Args:
        val_fraction: Share of the data for validation.
        test_fraction: Share of the data for testing.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 so that training data remains, got "
            f"{val_fraction} + {test_fraction}; lower one of them."
        )


def stratified_split(
    labels: np.ndarray | torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split sample indices into train/val/test, class by class, reproducibly.

    Each class is shuffled with a generator seeded by ``seed`` and cut by rounding its size times each
    fraction, so every split keeps the class proportions (up to one sample per class) and the same seed
    always gives the same split. The three index arrays are sorted, disjoint and cover ``range(len(labels))``.

    Args:
        labels: Integer class label per sample, shape ``(N,)``.
        val_fraction: Share of each class that goes to validation.
        test_fraction: Share of each class that goes to testing.
        seed: Seed of the shuffle.

    Returns:
        ``(train_idx, val_idx, test_idx)`` as sorted ``int64`` arrays.
    """
    check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        n_val = min(n_val, len(idx) - n_test)  # rounding must not over-draw a tiny class
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def split_seed(seed: int, *keys: int) -> int:
    """Derive an independent 63-bit seed for a sub-stream (e.g. one split) from a base seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def per_class_subset(labels: np.ndarray | torch.Tensor, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random samples of every class (all of a class that has fewer), seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


class TensorDictDataset(Dataset):
    """In-memory dataset of aligned tensors that returns ``{"input", "target"[, "annotation"]}`` dicts.

    Args:
        inputs: Float tensor ``(N, ...)``.
        targets: Integer labels ``(N,)``; stored as ``long``.
        annotations: Optional float tensor ``(N, ...)`` in ``[0, 1]``.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, annotations: torch.Tensor | None = None):
        if len(inputs) != len(targets) or (annotations is not None and len(annotations) != len(inputs)):
            raise ValueError("inputs, targets and annotations must have the same length.")
        self.inputs = inputs.float()
        self.targets = targets.long()
        self.annotations = None if annotations is None else annotations.float()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input": self.inputs[index], "target": self.targets[index]}
        if self.annotations is not None:
            item["annotation"] = self.annotations[index]
        return item


def split_standardized(
    images: torch.Tensor,
    labels: torch.Tensor,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    normalize: bool,
    train_per_class: int | None = None,
) -> tuple[tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset], tuple, float | None, float | None]:
    """Stratified train/val/test datasets of one pool of images, standardised with the training split's statistics.

    The one copy of what the image-pool modules (digits, MNIST) do: split with :func:`stratified_split`, then, with
    ``normalize``, subtract the training split's scalar mean and divide by its standard deviation (the validation
    and test images never inform the statistics).

    Args:
        images: ``(N, C, H, W)`` float images.
        labels: ``(N,)`` integer labels.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for testing.
        seed: Seed of the split.
        normalize: Standardise as described above.
        train_per_class: Keep only this many seeded random training samples of each class (validation and test
            stay as they are, so runs on smaller training sets are scored on the same images: learning curves).

    Returns:
        ``((train, val, test), split_indices, mean, std)``; ``mean`` and ``std`` are ``None`` without ``normalize``.
    """
    splits = stratified_split(labels, val_fraction, test_fraction, seed)
    if train_per_class is not None:
        train = splits[0][
            per_class_subset(np.asarray(labels)[splits[0]], train_per_class, split_seed(seed, 13))
        ]
        splits = (train, *splits[1:])
    mean = std = None
    if normalize:
        train = images[splits[0]]
        mean, std = train.mean().item(), train.std().item()
        images = (images - mean) / std
    return tuple(TensorDictDataset(images[idx], labels[idx]) for idx in splits), splits, mean, std


class SplitDataModule(L.LightningDataModule):
    """Base DataModule: subclasses build the three datasets, this class serves them.

    Subclasses implement :meth:`build_datasets`; ``setup`` calls it once (it is idempotent, so the
    ``fit`` and ``test`` stages share the same datasets) and stores ``train_dataset``, ``val_dataset``
    and ``test_dataset`` (and, for modules that split one pool of samples, ``split_indices``: the sorted
    indices of each split into that pool).

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: Seed of the split, of any generated data and of the training shuffle.
        pin_memory: Pin host memory for faster GPU transfer.
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, pin_memory: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        # Indices of each split into the full pool, for modules that split one pool (set in build_datasets).
        self.split_indices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return ``(train, val, test)`` datasets; deterministic for ``self.seed``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset, self.val_dataset, self.test_dataset = self.build_datasets()

    def _eval_sampler(self, dataset: Dataset, split: str) -> Sampler | None:
        """Under DDP: this process's share of an evaluation split, every sample in exactly one share."""
        trainer = getattr(self, "trainer", None)
        connector = getattr(trainer, "_accelerator_connector", None)
        if (
            trainer is None
            or trainer.world_size < 2
            or not getattr(connector, "use_distributed_sampler", True)
        ):
            return None  # one process, or the user shards the data themselves
        if len(dataset) < trainer.world_size:
            raise ValueError(
                f"the {split} split of {type(self).__name__} has {len(dataset)} samples, fewer than the "
                f"{trainer.world_size} processes: each process needs at least one; use fewer devices or more data"
            )
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def _loader(self, dataset: Dataset | None, shuffle: bool, split: str | None = None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader.")
        # Training: an order keyed by (seed, epoch) and a loader whose position is checkpointed, so a run
        # resumed mid-epoch sees exactly the batches the uninterrupted run would (lit_xai/data/resumable.py).
        # Validation / test under DDP: an unpadded share, which Lightning leaves as it is (a DistributedSampler).
        if shuffle:
            sampler = EpochShuffleSampler(dataset, self.seed)
        else:
            sampler = self._eval_sampler(dataset, split) if split is not None else None
        return (ResumableDataLoader if shuffle else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # A fresh seeded generator makes the worker seeds reproducible.
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, split="val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False, split="test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)
