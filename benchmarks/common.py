"""Small helpers shared by the benchmark scripts: timing, JSON results, tables, quiet training in worker processes."""

from __future__ import annotations

import importlib
import logging
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch

from lit_xai.io import atomic_write_json

T = TypeVar("T")

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def command_line() -> str:
    """The command that produced a result, as a user types it from the repository root (not this machine's path)."""
    return " ".join(["python -m", f"benchmarks.{Path(sys.argv[0]).stem}", shlex.join(sys.argv[1:])]).rstrip()


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically (a crash never leaves half a file)."""
    return atomic_write_json(RESULTS / f"{name}.json", payload)


def interleaved_times(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, run in turn ``repeats`` times, so machine noise hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain fixed-width table."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(cell(row.get(c, "")).ljust(widths[c]) for c in columns))


def instantiate(spec: dict[str, Any], **overrides: Any) -> Any:
    """Build ``class_path(**init_args)`` from a LightningCLI config section, with ``overrides`` on top."""
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**spec.get("init_args", {}), **overrides})


def quiet_trainer(max_epochs: int, **kwargs: Any) -> L.Trainer:
    """A CPU ``Trainer`` that writes and prints nothing (no logger, checkpoints, progress bar or summary)."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _quiet_job(fn: Callable[..., T], *args: Any) -> T:
    """Run one benchmark job with one thread and no warnings or Lightning chatter.

    The benchmarks train tiny networks, for which one thread per process is fastest and never oversubscribes the
    cores the other workers use.
    """
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return fn(*args)


def run_jobs(fn: Callable[..., T], jobs: Sequence[tuple], workers: int) -> Iterator[T]:
    """``fn(*job)`` for every job (one thread each, quietly), yielded in the order of ``jobs`` as they finish.

    With ``workers > 1`` the jobs run in that many spawned processes (``fn`` must be importable: a module-level
    function), else one after another in this process.
    """
    if workers <= 1:
        for job in jobs:
            yield _quiet_job(fn, *job)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_quiet_job, fn, *job) for job in jobs]
        for future in futures:
            yield future.result()
