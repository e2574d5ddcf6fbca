"""A run resumed from a checkpoint keeps logging into the W&B run it started, instead of opening a second one.

Lightning's ``WandbLogger`` opens a new W&B run unless it is given the old run's id, which a user resuming with
``--ckpt_path last`` does not have at hand. :class:`ContinueWandbRun` stores the id in every checkpoint, and
:func:`continue_wandb_run` hands it to the logger before ``trainer.fit(ckpt_path=...)`` (the Trainer opens the
logger's run while setting up, before it reads the checkpoint, so a callback restoring it would be too late). W&B
then continues that run; offline, ``wandb sync`` merges both folders into it. ``train.py`` does both for every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from lit_xai.io import safe_torch_load

__all__ = ["ContinueWandbRun", "continue_wandb_run"]

#: Where the id is kept in a checkpoint.
KEY = "lit_xai_wandb_run_id"


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


class ContinueWandbRun(Callback):
    """Store the id of the run's W&B run in every checkpoint (read back by :func:`continue_wandb_run`)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        loggers = _wandb_loggers(trainer)
        if loggers and loggers[0].version:
            checkpoint[KEY] = loggers[0].version


def _resolve(trainer: L.Trainer, ckpt_path: str | Path) -> Path | None:
    """The file ``ckpt_path`` names, resolving ``"last"``/``"best"`` as ``trainer.fit`` will."""
    if Path(ckpt_path).is_file():
        return Path(ckpt_path)
    try:  # Lightning's own resolution (private, but the one the Trainer runs next)
        path = trainer._checkpoint_connector._parse_ckpt_path(
            TrainerFn.FITTING, ckpt_path, model_provided=True, model_connected=True
        )
    except Exception:  # a value Lightning itself will reject, with its own message
        return None
    return Path(path) if path and Path(path).is_file() else None


def continue_wandb_run(trainer: L.Trainer, ckpt_path: str | Path | None) -> str | None:
    """Before ``trainer.fit(ckpt_path=ckpt_path)``: make the trainer's W&B logger continue the checkpoint's run.

    Returns:
        the run id continued, or ``None`` (no W&B logger, no checkpoint, or a checkpoint without an id).
    """
    loggers = _wandb_loggers(trainer)
    path = _resolve(trainer, ckpt_path) if loggers and ckpt_path else None
    checkpoint = safe_torch_load(path, mmap=True) if path else None
    run_id = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    if not run_id:
        return None
    for logger in loggers:
        if logger._experiment is None:  # the run is opened lazily from these init arguments
            logger._wandb_init.update(id=run_id, resume="allow")
            logger._id = run_id
        elif logger.version != run_id:
            rank_zero_warn(
                f"resuming from a checkpoint of W&B run {run_id}, but W&B run {logger.version} is already open; "
                f"the resumed epochs are logged there"
            )
    return run_id
