"""Metrics survive SIGKILL (every scalar is appended to ``metrics.jsonl`` as it is logged), and the run resumed with
``--ckpt_path last`` logs to the same W&B run (its id travels in the checkpoint)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_xai.scalar_log import read_scalars

ROOT = Path(__file__).resolve().parents[1]
STAGE = Path("outputs/digits/classifier")
KILL_AT_STEP = 9  # two batches into epoch 1 (6 batches per epoch), after a validation at the end of epoch 0


def train(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/digits/classifier.yaml"),
        "--model.init_args.backbone_kwargs.embed_dim=16",
        "--model.init_args.backbone_kwargs.depth=1",
        "--model.init_args.warmup_steps=2",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.batch_size=32",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # train.py makes W&B offline
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent), LIT_XAI_TRACEBACK="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def offline_run_ids(wandb_dir: Path) -> list[str]:
    """Run ids of the offline W&B runs in ``wandb_dir``, oldest first.

    The id is read from each run's data file, ``run-<id>.wandb``: the folder name ``offline-run-<time>-<id>`` gets
    ``-1`` appended when a second run starts in the same second (a fast resume does).
    """
    runs = sorted(wandb_dir.glob("offline-run-*"))
    return [data.stem.removeprefix("run-") for run in runs for data in run.glob("run-*.wandb")]


def wandb_ids(cwd: Path) -> list[str]:
    return offline_run_ids(cwd / STAGE / "wandb")


@pytest.mark.slow
def test_metrics_survive_sigkill_and_the_resumed_run_continues_the_wandb_run(tmp_path):
    killed = train(
        tmp_path,
        "--trainer.callbacks+=test_reliability_resume.KillAtStep",
        f"--trainer.callbacks.step={KILL_AT_STEP}",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    scalars = read_scalars(tmp_path / STAGE / "metrics.jsonl")
    trained = sorted(step for step, name in scalars if name == "train/loss")
    assert trained == list(range(KILL_AT_STEP)), trained  # every step logged before the kill, none lost
    assert any(name == "val/accuracy" for _, name in scalars)
    (run_id,) = wandb_ids(tmp_path)
    assert torch.load(tmp_path / STAGE / "checkpoints/last.ckpt", weights_only=True)["wandb_run_id"] == run_id

    resumed = train(tmp_path, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert wandb_ids(tmp_path) == [run_id, run_id]  # the resumed part is the same W&B run
    scalars = read_scalars(tmp_path / STAGE / "metrics.jsonl")
    assert sorted(step for step, name in scalars if name == "train/loss") == list(range(12))
