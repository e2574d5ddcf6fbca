"""The command line: a LightningCLI in which the model and the data are chosen by class path in a config.

``python train.py fit --config configs/digits/classifier.yaml`` trains; every option is also a flag
(``--trainer.max_epochs 3``, ``--model.init_args.lr 1e-4``) and ``--print_config`` shows the resolved config.
W&B runs offline unless the user sets ``WANDB_MODE`` (``wandb sync`` uploads them later).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import DummyLogger

from lit_xai.callbacks.checkpoint import keep_last_current
from lit_xai.callbacks.class_names import ClassNamesInCheckpoint
from lit_xai.callbacks.finite_loss import FiniteLossGuard
from lit_xai.callbacks.wandb_run import RememberWandbRun, wandb_run_id
from lit_xai.checkpoint_identity import import_class_path, require_stage
from lit_xai.data.resumable import RestoreLoaderPosition
from lit_xai.io import safe_torch_load, with_atomic_checkpoint_io
from lit_xai.run_lock import OutputFolderInUse, hold_output_folders
from lit_xai.scalar_log import ScalarFileLogger

__all__ = [
    "LitXaiCLI",
    "check_config_files",
    "finish_wandb_run",
    "main",
    "use_offline_wandb",
    "user_errors_exit",
]

#: Errors a user causes (bad setting, missing file, NaN loss, a folder in use): train.py shows them as one line.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, OutputFolderInUse)
_WRAPPED = "Does not validate against any of the Union subtypes"


def use_offline_wandb() -> None:
    """Run W&B offline unless the user chose otherwise, and never block on a network that is not there."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")


def finish_wandb_run() -> None:
    """Close the W&B run in progress, if any, so that the next stage run in this process starts its own.

    Lightning's ``WandbLogger`` adopts a run that is still open instead of creating one, so stages trained one
    after another in one process (``make demo``) would all log into the first stage's run.
    """
    wandb = sys.modules.get("wandb")  # never import wandb just to find that nothing is running
    if wandb is not None and wandb.run is not None:
        wandb.finish()


class LitXaiCLI(LightningCLI):
    """LightningCLI with any LightningModule / LightningDataModule of the toolkit chosen in the config."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        # Every run stops at the first NaN/inf loss or bad batch (lit_xai/callbacks/finite_loss.py), resumes
        # mid-epoch at the batch where it stopped (lit_xai/data/resumable.py) and in the W&B run it was logging to
        # (lit_xai/callbacks/wandb_run.py); checkpoints name the classes (lit_xai/callbacks/class_names.py).
        defaults = dict(kwargs.get("trainer_defaults") or {})
        defaults.setdefault(
            "callbacks",
            [FiniteLossGuard(), RestoreLoaderPosition(), RememberWandbRun(), ClassNamesInCheckpoint()],
        )
        kwargs["trainer_defaults"] = defaults
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path itself, before the trainer does, and takes the model's class and settings
        # from it: check it first, so a bad file or a checkpoint of another stage is one clear error.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("last", "best", "hpc", "registry") and "://" not in str(path):
            checkpoint = safe_torch_load(path, mmap=True)  # raises FileNotFoundError / ValueError
            wanted = _import(self.config[subcommand].get("model", {}).get("class_path") or "")
            if isinstance(wanted, type):
                # A checkpoint too old to name its stage is left to Lightning, which checks its weights.
                require_stage(
                    checkpoint, wanted, name=f"--ckpt_path {path}", exact=True, allow_unknown=True,
                    hint="resume from a checkpoint of this stage",
                )  # fmt: skip
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs):
        # Checkpoints are written atomically and read weights-only, unless the config brings its own CheckpointIO.
        plugins = kwargs.get("plugins", self._get(self.config_init, "trainer", default={}).get("plugins"))
        kwargs["plugins"] = with_atomic_checkpoint_io(plugins)
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning 2.6 rewrites last.ckpt only when the monitored metric improves: keep it the latest state.
        keep_last_current(trainer.callbacks)
        # Every scalar also goes to <default_root_dir>/metrics.jsonl, which survives SIGKILL (lit_xai/scalar_log.py).
        if trainer.loggers and not any(
            isinstance(lg, DummyLogger | ScalarFileLogger) for lg in trainer.loggers
        ):
            trainer.loggers = [*trainer.loggers, ScalarFileLogger(trainer.default_root_dir)]
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = _wandb_loggers(config)
        # W&B's service process starts with a process's first run and resolves a relative save_dir against its own
        # working directory: after a chdir (a notebook, stages run from their folders) a run's data went elsewhere.
        for entry in loggers:
            for key in ("save_dir", "dir"):
                if entry.init_args.get(key):
                    entry.init_args[key] = os.path.abspath(entry.init_args[key])
        # A resumed run logs to the W&B run stored in its checkpoint, unless the config names one.
        if self.subcommand != "fit" or not config.get("ckpt_path"):
            return
        run_id = wandb_run_id(_resume_path(config))
        if run_id is None:
            return
        for entry in loggers:
            if not (entry.init_args.get("id") or entry.init_args.get("version")):
                entry.init_args.id = run_id

    def _run_subcommand(self, subcommand: str) -> None:
        # One training run per output folder (lit_xai/run_lock.py): a second one stops here, before it writes.
        if subcommand != "fit" or not _first_process(self.trainer):
            super()._run_subcommand(subcommand)
            return
        with hold_output_folders(self._output_folders()):
            super()._run_subcommand(subcommand)

    def _output_folders(self) -> list[str]:
        """The folders this run was told to write: ``default_root_dir`` and checkpoint ``dirpath``s, if given.

        Folders Lightning picks itself (the working directory, ``lightning_logs/version_N``) are versioned per run,
        so runs never share them.
        """
        folders = [self._get(self.config, "trainer", default={}).get("default_root_dir")]
        folders += [getattr(callback, "dirpath", None) for callback in self.trainer.checkpoint_callbacks]
        return [str(folder) for folder in folders if folder and "://" not in str(folder)]


def _builds(node: object, base: type) -> bool:
    """Whether a config entry (``class_path`` + ``init_args``) builds a ``base``."""
    cls = _import(str(getattr(node, "class_path", "") or ""))
    return getattr(node, "init_args", None) is not None and isinstance(cls, type) and issubclass(cls, base)


def _wandb_loggers(config) -> list:
    """The config entries of ``trainer.logger`` that build a ``WandbLogger``."""
    logger = (config.get("trainer") or {}).get("logger")
    return [
        entry for entry in (logger if isinstance(logger, list) else [logger]) if _builds(entry, WandbLogger)
    ]


def _resume_path(config) -> str | None:
    """The checkpoint ``--ckpt_path`` will resume: the path itself, or for ``last`` the newest ``last.ckpt`` of the
    config's checkpoint folders (Lightning's rule), found before the trainer exists."""
    path = str(config.ckpt_path)
    if path != "last":
        return path if "://" not in path and path not in ("best", "hpc", "registry") else None
    found = []
    for callback in config.trainer.get("callbacks") or []:
        if (
            _builds(callback, ModelCheckpoint)
            and callback.init_args.get("dirpath")
            and callback.init_args.get("save_last")
        ):
            candidate = os.path.join(
                callback.init_args.dirpath, ModelCheckpoint.CHECKPOINT_NAME_LAST + ".ckpt"
            )
            if os.path.isfile(candidate):
                found.append(candidate)
    return max(found, key=os.path.getmtime) if found else None


def _first_process(trainer: L.Trainer) -> bool:
    """Whether this is the first process of the run: other DDP processes start later, from this one."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return environment is None or (environment.node_rank() == 0 and environment.local_rank() == 0)


def _import(class_path: str) -> object:
    """The class a dotted path names (the path itself if it cannot be imported), so aliases compare equal."""
    return import_class_path(class_path) or class_path


def _worker_message(text: str) -> str:
    """The original error of a DataLoader worker: PyTorch re-raises it with the worker's whole traceback as its
    message, whose last line is the one the user needs (``ValueError: cannot read image ...``)."""
    if "Original Traceback (most recent call last)" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """For scripts: a user error (bad value, missing file, NaN loss) prints one line and exits with status 1.

    Set ``LIT_XAI_TRACEBACK=1`` to get the full traceback instead.
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("LIT_XAI_TRACEBACK", "") not in ("", "0"):
            raise
        # jsonargparse wraps an error raised while building the model or the data module in a long message
        # listing every candidate class; the user needs the original one.
        while str(err).startswith(_WRAPPED) and isinstance(err.__cause__ or err.__context__, USER_ERRORS):
            err = err.__cause__ or err.__context__
        message = _worker_message(str(err))
        message = " ".join(message.split())
        raise SystemExit(f"error: {message} (LIT_XAI_TRACEBACK=1 shows the traceback)") from None


#: Suffixes that mark a ``--config`` value as a file name rather than an inline YAML/JSON string.
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _config_values(args: Sequence[str]) -> Iterator[str]:
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith("--config="):
            yield arg.split("=", 1)[1]


def closest_file(
    path: str | Path, suffixes: Sequence[str] = _CONFIG_SUFFIXES, max_files: int = 2000
) -> str | None:
    """The existing file whose path is most like ``path`` (a typo in a folder or a file name), or ``None``.

    Looks below the nearest folder of ``path`` that exists, three levels deep at most, skipping hidden folders, so
    a typo next to a large ``outputs/`` tree stays fast.
    """
    path = Path(path)
    anchor = path.parent
    while not anchor.is_dir() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        return None
    candidates: list[str] = []
    depth0 = len(anchor.parts)
    for folder, subfolders, files in os.walk(anchor):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != "__pycache__")
        if len(Path(folder).parts) - depth0 >= 3:
            subfolders[:] = []
        candidates += [os.path.join(folder, f) for f in sorted(files) if f.endswith(tuple(suffixes))]
        if len(candidates) >= max_files:
            break
    # Compared below the anchor: a long shared prefix would make any two paths look alike.
    relative = {os.path.relpath(c, anchor): c for c in candidates}
    matches = difflib.get_close_matches(os.path.relpath(path, anchor), relative, n=1, cutoff=0.6)
    return relative[matches[0]] if matches else None


def check_config_files(args: Sequence[str]) -> None:
    """Raise one clear ``FileNotFoundError`` for a ``--config`` file that does not exist, naming the closest one.

    jsonargparse reports a missing config file after its full usage message (about 50 lines); a typo deserves
    one line. Values that are not file names (inline YAML, URLs) are left to jsonargparse.
    """
    for value in _config_values(args):
        if "://" in value or "\n" in value or not value.endswith(_CONFIG_SUFFIXES) or Path(value).is_file():
            continue
        guess = closest_file(value)
        hint = f"did you mean {guess}?" if guess else "check the path; the configs are in configs/<dataset>/"
        raise FileNotFoundError(f"config file not found: {value} ({hint})")


def main(args: list[str] | None = None) -> LitXaiCLI:
    check_config_files(sys.argv[1:] if args is None else args)
    use_offline_wandb()
    return LitXaiCLI(args=args)
