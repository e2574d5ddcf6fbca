"""Resuming a killed InputIBA run: its progress in a folder, written atomically, removed when the run ends.

InputIBA spends most of its time in the per-image GAN (:mod:`.prior`), hundreds of steps per chunk of images. A
run given a state folder (``InputIBA.explain(..., state_dir=...)``; the command uses ``<output_dir>/resume``)
keeps there

- ``chunk_<first image>.pt``: the maps and learned prior of every finished chunk;
- ``prior_<first image>.pt``: the chunk in progress, every ``save_every`` GAN steps: the fitted feature bottleneck
  and :meth:`GenerativePrior.training_state` (weights, both optimisers, every image's random stream, the step).

A run restarted with the same images, model and settings skips the finished chunks and continues the GAN from its
last state, so it ends with the same weights and maps, bit for bit, as a run that was never stopped. Every file
records a fingerprint of what it was computed from; a folder left by a run with other images or settings is
refused, never mixed in. Files go through :func:`lit_xai.io.atomic_save` (a kill mid-write leaves the previous
state, and the next write removes the killed writer's temporary file), and the folder is removed when the run
returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.io import atomic_save, remove_stale_temporaries, safe_torch_load

__all__ = ["ResumeState", "run_fingerprint"]

_STATE_FILE = re.compile(r"^(chunk|prior)_\d+\.pt$")


def _update(digest: Any, value: Any) -> None:
    """Feed ``value`` (tensors, modules, dataclasses, containers, plain values) into ``digest``, bytes exactly."""
    if isinstance(value, Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, nn.Module):
        _update(digest, value.state_dict())
    elif is_dataclass(value) and not isinstance(value, type):
        _update(digest, asdict(value))
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            _update(digest, value[key])
    elif isinstance(value, list | tuple):
        for item in value:
            _update(digest, item)
    else:
        digest.update(repr(value).encode())


def run_fingerprint(*parts: Any) -> str:
    """A SHA-256 of everything a run's results depend on (images, targets, model weights, settings, seeds)."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()


class ResumeState:
    """The progress files of one run in ``folder``.

    Args:
        folder: where the files live (created on the first save).
        fingerprint: :func:`run_fingerprint` of the run; files with another one are refused.

    Raises:
        ValueError: ``folder`` holds the progress of another run (other images, model or settings).
    """

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = Path(folder), fingerprint
        for path in self._files():
            saved = safe_torch_load(path, mmap=True).get("fingerprint")
            if saved != fingerprint:
                raise ValueError(
                    f"{self.folder} holds the progress of another InputIBA run (other images, model or settings, "
                    f"in {path.name}); delete the folder to start afresh, or choose another output_dir"
                )

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _STATE_FILE.match(p.name))

    def _path(self, kind: str, first: int) -> Path:
        return self.folder / f"{kind}_{first:06d}.pt"

    def load(self, kind: str, first: int) -> dict | None:
        """The saved ``kind`` (``"chunk"`` or ``"prior"``) of the chunk starting at image ``first``, if any."""
        path = self._path(kind, first)
        return safe_torch_load(path) if path.is_file() else None

    def save(self, kind: str, first: int, state: dict) -> None:
        """Write ``state`` atomically (a kill leaves the previous file)."""
        atomic_save({**state, "fingerprint": self.fingerprint}, self._path(kind, first))

    def finish_chunk(self, first: int, result: dict) -> None:
        """Record a finished chunk, then drop its GAN state (in that order: a kill between them loses nothing)."""
        self.save("chunk", first, result)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path("prior", first))

    def clear(self) -> None:
        """Remove every progress file, any temporary file a killed writer left, and the folder once empty."""
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        remove_stale_temporaries(self.folder)
        with contextlib.suppress(OSError):  # absent, or holding files that are not ours: leave it
            self.folder.rmdir()
