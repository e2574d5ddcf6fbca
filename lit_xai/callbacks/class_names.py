"""Checkpoints name the classes their model predicts, so that later stages, figures and readers need not guess.

A checkpoint holds a 3-way head but not which of "cat", "dog" and "fox" is class 1; whoever explains the model
later (``evaluate.py`` on another machine, the export to safetensors + JSON, a notebook) would print indices.
:class:`ClassNamesInCheckpoint` copies the data module's class names (:func:`lit_xai.data.base.class_names`) into
every checkpoint, under :data:`KEY`; ``train.py`` adds it to every run.

They sit next to ``hyper_parameters`` rather than inside: LightningCLI gives a checkpoint's hyperparameters back to
the module's ``__init__`` when a run resumes with ``--ckpt_path``, and no module takes ``class_names``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_xai.data.base import class_names

__all__ = ["KEY", "ClassNamesInCheckpoint", "checkpoint_class_names"]

#: Where the names are kept in a checkpoint.
KEY = "lit_xai_class_names"


class ClassNamesInCheckpoint(Callback):
    """Store the data module's class names in every checkpoint (nothing when it has none)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        names = class_names(trainer.datamodule)
        if names is not None:
            checkpoint[KEY] = names


def checkpoint_class_names(checkpoint: dict[str, Any] | str | Path) -> list[str] | None:
    """The class names stored in a checkpoint (a loaded dict or a path, read weights-only), or ``None``."""
    if not isinstance(checkpoint, dict):
        from lit_xai.models import read_checkpoint

        checkpoint = read_checkpoint(checkpoint)
    names = checkpoint.get(KEY)
    return [str(name) for name in names] if isinstance(names, list | tuple) and names else None
