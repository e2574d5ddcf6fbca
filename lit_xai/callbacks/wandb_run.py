"""A resumed run continues its W&B run: the run id travels in the checkpoint.

Without it, ``--ckpt_path last`` after a kill starts a second W&B run, and the history of one training is split
over two runs that nothing links. :class:`RememberWandbRun` writes the W&B run id into every checkpoint
(``checkpoint["wandb_run_id"]``); ``train.py`` reads it back from the checkpoint it resumes and gives it to the
config's ``WandbLogger`` (``id``; Lightning's logger resumes with ``resume="allow"``), unless the config names a run
itself. Offline, the resumed part is a new ``offline-run-*`` folder with the same id, and ``wandb sync`` puts both
parts into one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from lit_xai.io import safe_torch_load

__all__ = ["KEY", "RememberWandbRun", "wandb_run_id"]

KEY = "wandb_run_id"


class RememberWandbRun(Callback):
    """Store the id of the trainer's W&B run in each checkpoint."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[KEY] = str(logger.version)
                return


def wandb_run_id(path: str | Path | None) -> str | None:
    """The W&B run id stored in checkpoint ``path`` (``None`` for no file or no id)."""
    if path is None or not Path(path).is_file():
        return None
    checkpoint: Any = safe_torch_load(path, mmap=True)
    value = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    return str(value) if value else None
