"""Training data order that survives a kill: a shuffle keyed by (seed, epoch), and a loader that can resume mid-epoch.

A plain ``DataLoader(shuffle=True, generator=g)`` draws each epoch's order from a generator whose state lives only
in memory, so a run resumed from a checkpoint sees different batches than the run it continues, and Lightning,
finding no loader state, replays the epoch from its first batch. Here:

- :class:`EpochShuffleSampler` draws the permutation of epoch ``e`` from a generator seeded by ``(seed, e)``:
  any process can rebuild any epoch's order. It is a ``RandomSampler``, so under DDP Lightning swaps in its
  ``DistributedSampler`` (also keyed by seed and epoch) as usual.
- :class:`ResumableDataLoader` counts the batches it has handed out and implements ``state_dict`` /
  ``load_state_dict``; Lightning stores that state in every checkpoint and, on ``--ckpt_path``, restores it, so
  the resumed epoch continues with the batch after the last one trained (the skipped samples are not loaded).
- :class:`RestoreLoaderPosition` hands that state to the loader when Lightning itself does not: Lightning 2.6
  restores loader states only if the training loader is first built after the checkpoint is read, but
  ``configure_optimizers`` asking for ``trainer.estimated_stepping_batches`` (as every lit_xai module does for its
  schedule) builds it before. ``train.py`` adds this callback to every run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

__all__ = ["EpochShuffleSampler", "ResumableDataLoader", "RestoreLoaderPosition"]


class EpochShuffleSampler(RandomSampler):
    """A random order of ``range(len(data_source))`` that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (as for ``DistributedSampler``); outside Lightning, call
    it yourself or every epoch has the same order.

    Args:
        data_source: the dataset (only its length is used).
        seed: seed of the shuffle.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0  # samples of the current epoch to skip once (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        # Datasets whose items depend on the epoch (lit_xai.data.augment.RandomShift) follow the sampler.
        if hasattr(self.data_source, "set_epoch"):
            self.data_source.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
        order = torch.randperm(len(self.data_source), generator=torch.Generator().manual_seed(seed))
        start, self.start = self.start, 0
        yield from order[start:].tolist()


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position in the epoch is saved in checkpoints and restored on resume.

    The state is ``{"epoch", "batches"}``: the sampler's epoch and the batches handed out in it. After
    :meth:`load_state_dict`, the next pass over that same epoch starts at batch ``batches``: an
    :class:`EpochShuffleSampler` skips the sample indices (nothing is loaded); any other sampler (e.g. Lightning's
    ``DistributedSampler`` under DDP) has its first batches drawn and dropped. A pass over another epoch (the
    checkpoint was taken at the end of an epoch) starts from the beginning.
    """

    _batches = 0
    _resume: tuple[int, int] | None = None

    def _index_sampler_of(self) -> Any:
        return getattr(self.batch_sampler, "sampler", None) or self.sampler

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing below runs before the first batch is asked for, i.e. after Lightning's set_epoch.
        sampler, resume, self._resume = self._index_sampler_of(), self._resume, None
        start = drop = 0
        if resume is not None and resume[0] == getattr(sampler, "epoch", 0):
            start = resume[1]
            if isinstance(sampler, EpochShuffleSampler) and self.batch_size is not None:
                sampler.start = start * self.batch_size
            else:
                drop = start
        self._batches = start
        for index, batch in enumerate(super().__iter__()):
            if index >= drop:
                self._batches += 1
                yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self._index_sampler_of(), "epoch", 0)), "batches": int(self._batches)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = int(state_dict.get("epoch", 0)), int(state_dict.get("batches", 0))
        sampler = self._index_sampler_of()
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self._resume = (epoch, batches)
        self._batches = batches


def _flatten(iterables: Any) -> list[Any]:
    if isinstance(iterables, Mapping):
        return [leaf for value in iterables.values() for leaf in _flatten(value)]
    if isinstance(iterables, list | tuple):
        return [leaf for value in iterables for leaf in _flatten(value)]
    return [iterables]


class RestoreLoaderPosition(L.Callback):
    """Give the training loaders their position from the checkpoint a run resumes from (``--ckpt_path``).

    Uses only public hooks: the loader states Lightning wrote into the checkpoint are read in ``on_load_checkpoint``
    and handed to the stateful training loaders in ``on_train_start``, before the first batch is drawn. Loading the
    same state twice (when Lightning did restore it) changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._states: list[dict] | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._states = fit_loop.get("state_dict", {}).get("combined_loader")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self._states = self._states, None
        if not states:
            return
        loaders = [
            loader
            for loader in _flatten(trainer.train_dataloader)
            if callable(getattr(loader, "state_dict", None))
            and callable(getattr(loader, "load_state_dict", None))
        ]
        if len(loaders) == len(
            states
        ):  # else the data changed since the checkpoint: Lightning warns about it
            for loader, state in zip(loaders, states):
                loader.load_state_dict(state)
