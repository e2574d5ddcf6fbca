"""Checkpoints name the classes their model predicts, so that later stages, figures and readers need not guess.

A checkpoint holds a 3-way head but not which of "cat", "dog" and "fox" is class 1; whoever explains the model
later (``evaluate.py`` on another machine, a notebook) would print indices. :class:`ClassNamesInCheckpoint` copies
the data module's class names (:func:`lit_xai.data.base.class_names`) into every checkpoint's
``hyper_parameters["class_names"]``. It writes the checkpoint only, not the module's settings:
``load_from_checkpoint`` passes a module only the settings its ``__init__`` takes, so the extra key is harmless.
``train.py`` adds it to every run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_xai.data.base import class_names

__all__ = ["ClassNamesInCheckpoint", "KEY"]

#: Where the names are kept in a checkpoint's ``hyper_parameters``.
KEY = "class_names"


class ClassNamesInCheckpoint(Callback):
    """Store the data module's class names in every checkpoint's hyperparameters (nothing when it has none)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        names = class_names(trainer.datamodule)
        hyper_parameters = checkpoint.get("hyper_parameters")
        if names is not None and (hyper_parameters is None or isinstance(hyper_parameters, dict)):
            checkpoint["hyper_parameters"] = {**(hyper_parameters or {}), KEY: names}
