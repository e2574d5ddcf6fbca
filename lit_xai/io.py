"""Crash-safe outputs and safe inputs: atomic file writes and a Lightning ``CheckpointIO`` that uses them.

A job killed while it writes (SIGKILL on a shared cluster, a full disk, a power cut) must never leave a truncated
checkpoint or report behind, because the next run would load it. Every writer here writes to a temporary file in
the same folder, flushes it to disk, and renames it over the target with :func:`os.replace`, which is atomic on
POSIX and Windows: readers see the old file or the new one, never half of one. On the way in, checkpoints are only
ever read with ``torch.load(weights_only=True)`` (see :func:`lit_xai.models.read_checkpoint`): a crafted pickle
cannot run code.

:class:`AtomicCheckpointIO` plugs both rules into Lightning (``Trainer(plugins=[AtomicCheckpointIO()])``; the
``train.py`` CLI adds it to every run).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_xai.owners import host_name, process_alive

__all__ = [
    "AtomicCheckpointIO",
    "atomic_open",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "describe_error",
    "remove_stale_temporaries",
    "safe_torch_load",
    "with_atomic_checkpoint_io",
]


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _default_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


#: ``.<target>.pid<PID>@<host>.<random>.tmp``: the temporary files of :func:`atomic_open`, named after their writer
#: (``.<target>.<random>.tmp`` before lit_xai recorded the writer; ``<random>`` is ``tempfile``'s 8 characters).
_TEMPORARY = re.compile(
    r"^\.(?P<target>.+?)(\.pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9.-]+))?\.[a-z0-9_]{8}\.tmp$"
)
#: A temporary file of another machine untouched for this long is taken as left by a killed writer.
STALE_AFTER_S = 24 * 3600


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_open` writers left in ``folder``; return them.

    A SIGKILL inside :func:`atomic_open` leaves its temporary file (no clean-up code runs in a killed process).
    Each name records its writer's PID and machine: a file of this machine whose writer is gone is removed; a file
    of another machine (a shared file system), or one named by an older lit_xai without its writer, is removed once
    untouched for :data:`STALE_AFTER_S` seconds, since its writer cannot be checked from here. Files a live writer
    holds, and every other file, are left alone.
    """
    host, now, removed = host_name(), time.time(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMPORARY.match(entry.name)
        if found is None:
            continue
        try:
            if found["host"] == host:
                stale = not process_alive(int(found["pid"]))
            # another machine's, or an older lit_xai's that names no writer: judged by age
            else:
                stale = now - entry.stat().st_mtime > STALE_AFTER_S
            if stale:
                os.remove(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # removed meanwhile by another process, or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` and, if the block finishes, rename it to ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content (or stays absent) and the
    temporary file is removed. A hard kill may leave the temporary file ``.<name>.pid<PID>@<host>.*.tmp``, never a
    truncated ``path``; the next write into the same folder removes it (:func:`remove_stale_temporaries`).

    Args:
        path: the final file; its folder is created if needed.
        mode: ``"wb"`` or ``"w"``.
        encoding: text encoding for ``mode="w"`` (UTF-8 by default).

    Yields:
        the open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)  # what earlier killed writers left here
    # Same folder as the target: os.replace is only atomic within one file system. The name says who writes it.
    owner = f"pid{os.getpid()}@{host_name()}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{owner}.", suffix=".tmp")
    try:
        kwargs = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        # mkstemp creates the file private (0600); give it the permissions a plain open() would have.
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, payload: Any, indent: int = 2) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (serialised first, so a bad value writes nothing)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through a temporary file: a crash never leaves a truncated checkpoint."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def describe_error(err: BaseException) -> str:
    """``"TypeName: message"`` on one line and whole.

    Never cut: torch puts the part that names the problem (the refused global, the missing record) after a long
    preamble, so a message cut at a few hundred characters hides exactly what the user needs.
    """
    return f"{err.__class__.__name__}: {' '.join(str(err).split())}"


def safe_torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for each way a file can be wrong.

    Args:
        path: the checkpoint.
        map_location: where tensors go.
        mmap: map the tensors' storage instead of reading it (cheap when only the metadata is needed); ignored for
            files in the legacy non-zip format, which cannot be mapped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty, truncated or not a checkpoint, or it holds Python objects whose unpickling
            could run code (which is refused, and the code does not run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (check the path, or train the previous stage first)"
        )
    # mmap is only a shortcut, and torch refuses it for the legacy (pre-1.6, non-zip) format, which is as safe to
    # read weights-only as the zip one: read such files normally instead of calling them corrupt.
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"unsupported GLOBAL (\S+)", str(err))
        what = f"the global {found.group(1)}" if found else "objects the weights-only loader refuses"
        raise ValueError(
            f"refusing to load {path}: it holds {what}, which could run code when unpickled. lit_xai loads only "
            f"tensors and plain values; if you trust the file, re-save its state_dict (or use safetensors)"
        ) from err
    except Exception as err:  # noqa: BLE001 - zip, EOF and key errors all mean a damaged file
        size = path.stat().st_size
        raise ValueError(
            f"{path} is not a readable checkpoint ({size} bytes; {describe_error(err)}): it "
            f"is truncated or corrupt, e.g. from a killed copy; use another checkpoint or train the stage again"
        ) from err


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically (with fsync) and only ever loads weights.

    Saving: local checkpoints go through :func:`atomic_save`; remote ones (``s3://`` ...) fall back to Lightning's
    own transactional write. Loading (``--ckpt_path``, ``load_from_checkpoint`` through the trainer): always
    ``weights_only=True``, whatever the caller asked, with one clear error for a missing, truncated or unsafe file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        atomic_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        if weights_only is False:
            raise ValueError(
                f"refusing to load {path} with weights_only=False: lit_xai never unpickles arbitrary objects. "
                f"Re-save the checkpoint as tensors and plain Python values"
            )
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return safe_torch_load(str(path).removeprefix("file://"), map_location=map_location or "cpu")


def with_atomic_checkpoint_io(plugins: Any) -> list:
    """``plugins`` (None, one plugin or a list) plus an :class:`AtomicCheckpointIO` unless one CheckpointIO is there."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, list | tuple):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins
