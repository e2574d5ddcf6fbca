"""Send explanation images to whatever loggers the Trainer has.

- :class:`~lightning.pytorch.loggers.WandbLogger`: one ``wandb.Image`` panel per input under one key per method,
  each with its caption (W&B shows them as a media panel with a step slider);
- :class:`~lightning.pytorch.loggers.TensorBoardLogger`: the panels tiled into one image (``add_image``) and the
  captions as text (``add_text``), under the same key;
- any other logger (CSV, MLflow, ...) or none: a PNG per evaluation under the run's log directory,
  ``<log_dir>/<key>/epoch=003-step=000120.png`` (drawn with Matplotlib, with captions: slower than the arrays
  W&B and TensorBoard receive);
- ``fast_dev_run``'s dummy logger: nothing.

Lightning's loggers already act on rank zero only; the callbacks call this from rank zero as well, so the PNG files
are written once. W&B receives every method of an evaluation in one ``log`` call (one history row per evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.logger import DummyLogger

from lit_xai.scalar_log import ScalarFileLogger
from lit_xai.viz import tile_images

__all__ = ["Panels", "log_panels", "png_path"]


def _log_dir(trainer: L.Trainer, logger: Logger | None) -> Path:
    if logger is not None:
        for attribute in ("log_dir", "save_dir"):
            directory = getattr(logger, attribute, None)
            if directory:
                return Path(directory)
    return Path(trainer.default_root_dir)


def png_path(trainer: L.Trainer, key: str, logger: Logger | None = None) -> Path:
    """Where the PNG of this evaluation goes: ``<log_dir>/<key>/epoch=EEE-step=SSSSSS.png``."""
    name = f"epoch={trainer.current_epoch:03d}-step={trainer.global_step:06d}.png"
    return _log_dir(trainer, logger) / key / name


@dataclass
class Panels:
    """One method's images of one evaluation: an ``(H, W, 3)`` uint8 array and a caption per input, and how to
    draw the whole evaluation as a PNG for loggers that take no images."""

    images: Sequence[np.ndarray]
    captions: Sequence[str]
    write_png: Callable[[Path], None]


def log_panels(trainer: L.Trainer, panels: Mapping[str, Panels], columns: int = 4) -> list[Path]:
    """Log one evaluation (panels per key, e.g. ``"explanations/gradient"``) to every logger of ``trainer``.

    W&B gets all keys in one ``log`` call, so one evaluation is one row of the run's history.

    Returns:
        The PNG files written (empty when every logger takes images).
    """
    step = trainer.global_step
    written: list[Path] = []
    # The scalar file (lit_xai/scalar_log.py) takes no images; it rides along with the config's logger.
    loggers = [logger for logger in trainer.loggers if not isinstance(logger, ScalarFileLogger)]
    for logger in loggers:
        if isinstance(logger, DummyLogger):
            continue  # logging switched off (fast_dev_run)
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics(
                {
                    key: [wandb.Image(image, caption=caption) for image, caption in zip(p.images, p.captions)]
                    for key, p in panels.items()
                },
                step=step,
            )
        elif isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            for key, p in panels.items():
                writer.add_image(key, tile_images(p.images, columns), step, dataformats="HWC")
                table = "  \n".join(f"{i}. {caption}" for i, caption in enumerate(p.captions))
                writer.add_text(f"{key}/captions", table, step)
        else:
            written += _write_pngs(trainer, panels, logger, written)
    if not loggers:
        written += _write_pngs(trainer, panels, None, written)
    return written


def _write_pngs(
    trainer: L.Trainer, panels: Mapping[str, Panels], logger: Logger | None, done: list[Path]
) -> list[Path]:
    written = []
    for key, p in panels.items():
        path = png_path(trainer, key, logger)
        if path not in done:  # loggers sharing a directory get one file
            p.write_png(path)
            written.append(path)
    return written
