"""``last.ckpt`` that always holds the latest state, whatever the monitored metric does.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only when a top-k
checkpoint was saved at the same step, i.e. when the monitored metric improved, and at the end of training only if
``last.ckpt`` was never written. A run whose metric stops improving at epoch 5 of 30 keeps epoch 5 in ``last.ckpt``:
a killed run resumes from there, and ``--ckpt_path last`` on a finished run silently trains the lost epochs again.

:class:`ModelCheckpoint` is a drop-in subclass that, after Lightning's own saving, writes ``last.ckpt`` whenever it
does not hold the current global step: after each validation (or training epoch, where Lightning saves there), and
at the end of training. ``best.ckpt`` (top-k) keeps its meaning. ``save_last="link"`` keeps Lightning's meaning (a
link to the latest top-k checkpoint). The ``train.py`` CLI turns every plain ``lightning.pytorch.callbacks
.ModelCheckpoint`` of a config into this class (:func:`keep_last_current`), so configs need no change.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

__all__ = ["ModelCheckpoint", "keep_last_current"]


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``save_last=True`` means "``last.ckpt`` is the latest state"."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # e.g. stopped by max_steps mid-epoch, or validation not run after the last epoch
        self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        # Lightning's skip rule: not fitting, sanity check, fast_dev_run, or a checkpoint already holds this step
        # (every save at a step writes last.ckpt too, so "already saved" means last.ckpt is current).
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def keep_last_current(callbacks: Iterable[object]) -> None:
    """Make every plain Lightning ``ModelCheckpoint`` in ``callbacks`` a :class:`ModelCheckpoint`, in place.

    The subclass adds no state, only hooks, so switching the class of an instance the config already built keeps
    every setting (and what it restored from a checkpoint). Subclasses other than Lightning's own class are left
    alone: they chose their own saving rules.
    """
    for callback in callbacks:
        if type(callback) is LightningModelCheckpoint:
            callback.__class__ = ModelCheckpoint
