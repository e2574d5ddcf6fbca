"""One run per output folder: a lock that names its holder and dies with it.

Two runs started on the same output folder (a resubmitted job while the first still runs, two shells) both train
and both exit 0, leaving one run's checkpoints next to the other run's ``config.yaml``. :func:`hold_output_folders`
takes an advisory lock (``flock``) on ``<parent>/.<folder>.lit_xai.lock`` (next to the folder, which keeps only the
run's outputs) for the whole run, and writes who holds it (PID, machine, start time, command) into that file:

- a second run on the same folder stops at once with one line naming the holder (:class:`OutputFolderInUse`);
- a run that died (SIGKILL, a lost node) holds nothing: the kernel drops a process's locks when it ends, so the
  next run takes the folder over without any stale-lock guessing.

The lock file stays after the run (removing it would race with a run that is opening it); its content names the
last holder. Where ``flock`` is missing (Windows) or the file system refuses it, the run goes on
unlocked with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from lit_xai.owners import host_name

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_SUFFIX", "OutputFolderInUse", "hold_output_folders", "lock_path"]

LOCK_SUFFIX = ".lit_xai.lock"


class OutputFolderInUse(RuntimeError):
    """Another live run holds the output folder."""


def lock_path(folder: str | Path) -> Path:
    """Where the lock of ``folder`` lives: next to it, so the folder itself holds only the run's outputs."""
    folder = Path(folder).expanduser().resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (started {info.get('started', '?')})"


def _open_lock_file(folder: Path, stack: contextlib.ExitStack) -> tuple[Path, IO[str]]:
    """Open the lock file next to ``folder``, or inside it where its parent is not writable (``/scratch/me``)."""
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "a+": never truncate the file before holding its lock (it names the current holder).
        return path, stack.enter_context(open(path, "a+", encoding="utf-8"))  # noqa: SIM115 - closed by the stack
    except PermissionError:
        path = (
            Path(folder) / LOCK_SUFFIX
        )  # every run on this folder meets the same permissions, so the same file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, stack.enter_context(open(path, "a+", encoding="utf-8"))  # noqa: SIM115 - closed by the stack


#: How a train.py run gets another folder; other commands name their own option.
TRAIN_FOLDER_OPTIONS = "--trainer.default_root_dir and the checkpoint dirpath"


def _lock(folder: Path, stack: contextlib.ExitStack, options: str) -> None:
    path, handle = _open_lock_file(folder, stack)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputFolderInUse(
            f"output folder {folder} is in use by another run: {_holder(handle)}, see {path}; wait for it to "
            f"finish, stop it, or give this run another folder ({options})"
        ) from None
    except OSError as err:  # e.g. a network file system mounted without lock support
        warnings.warn(
            f"cannot lock {path} ({err}); nothing stops two runs from sharing {folder}", stacklevel=3
        )
        return
    stack.callback(fcntl.flock, handle.fileno(), fcntl.LOCK_UN)
    holder = {
        "pid": os.getpid(),
        "host": host_name(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder) + "\n")
    handle.flush()


@contextlib.contextmanager
def hold_output_folders(
    folders: Iterable[str | Path], options: str = TRAIN_FOLDER_OPTIONS
) -> Iterator[list[Path]]:
    """Hold every folder for the duration of the block.

    Args:
        folders: the run's output folders (each is locked, so two runs that share any one of them collide).
        options: the command-line options that give a run another folder, named in the error.

    Yields:
        the folders locked.

    Raises:
        OutputFolderInUse: a live process (this machine or another sharing the file system) holds one of them;
            the message names it. Nothing is locked then.
    """
    folders = sorted({Path(folder).expanduser().resolve() for folder in folders})
    if fcntl is None:
        warnings.warn(
            "file locks are not available here; nothing stops two runs from sharing a folder", stacklevel=3
        )
        yield []
        return
    with contextlib.ExitStack() as stack:
        for folder in folders:
            _lock(folder, stack, options)
        yield folders
