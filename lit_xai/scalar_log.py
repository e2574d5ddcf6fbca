"""Every logged scalar in a local append-only file that survives SIGKILL.

W&B writes its offline run through a helper process and buffers: a training process killed with SIGKILL often
leaves a ``.wandb`` file of a few bytes, and the metrics of the run are gone (in 4 of 6 killed runs tried).
:class:`ScalarFileLogger` is a Lightning logger that appends each ``log_metrics`` call as one JSON line to
``<save_dir>/metrics.jsonl`` and hands it to the operating system at once (line-buffered), so a kill loses nothing
already logged. A run resumed with ``--ckpt_path last`` appends to the same file: the steps between the checkpoint
and the kill appear twice, and the later line is the one the resumed run continued from. Read it with
:func:`read_scalars`.

``train.py`` adds it next to the config's logger(s) (not when logging is switched off).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

__all__ = ["ScalarFileLogger", "read_scalars"]


class ScalarFileLogger(Logger):
    """Append ``{"step", "time", <name>: <value>, ...}`` per logging call to ``<save_dir>/<filename>``.

    Args:
        save_dir: the run's folder.
        filename: the file in it.
    """

    def __init__(self, save_dir: str | Path, filename: str = "metrics.jsonl") -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self.path = Path(save_dir) / filename
        self._handle: IO[str] | None = None

    @property
    def name(self) -> str:
        return "scalars"

    @property
    def version(self) -> None:
        return None

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> IO[str]:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: every line reaches the operating system when it is written, so it outlives the process.
            self._handle = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in finalize
            self._handle.write(json.dumps({"start": time.time(), "pid": os.getpid()}) + "\n")
        return self._handle

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are in the run's ``config.yaml`` already."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {name: float(value) for name, value in metrics.items()}
        self.experiment.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_scalars(path: str | Path) -> dict[tuple[int, str], float]:
    """``{(step, name): value}`` from a :class:`ScalarFileLogger` file; a later line wins (a resumed run's).

    A last line cut short by a kill mid-write is skipped.
    """
    values: dict[tuple[int, str], float] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "step" not in row:
            continue  # a run's start marker
        step = row.pop("step")
        row.pop("time", None)
        values.update({(step, name): value for name, value in row.items()})
    return values
