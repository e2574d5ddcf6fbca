"""``last.ckpt`` holds the latest state even when the monitored metric never improves (lr 0), ``best.ckpt`` keeps the
first best, and ``--ckpt_path last`` continues from the latest state instead of training lost epochs again."""

from pathlib import Path

import lightning as L
import pytest
import torch

from lit_xai.callbacks import ModelCheckpoint
from lit_xai.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model.init_args.backbone_kwargs.embed_dim=16", "--model.init_args.backbone_kwargs.depth=1"]
CHECKPOINTS = Path("outputs/digits/classifier/checkpoints")


class CountSteps(L.Callback):
    """Test helper: the training batches this run itself trained (a resumed run starts at 0)."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


def fit(*extra: str) -> tuple[L.Trainer, CountSteps]:
    cli = main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/digits/classifier.yaml"),
            *TINY,
            "--model.init_args.lr=0.0",  # val/accuracy never improves after the first epoch
            "--model.init_args.warmup_steps=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.callbacks+=test_reliability_checkpoint.CountSteps",
            "--data.init_args.batch_size=16",
            *extra,
        ]
    )
    counter = next(c for c in cli.trainer.callbacks if isinstance(c, CountSteps))
    return cli.trainer, counter


def step_of(name: str) -> tuple[int, int]:
    checkpoint = torch.load(CHECKPOINTS / name, weights_only=True, map_location="cpu")
    return checkpoint["global_step"], checkpoint["epoch"]


@pytest.mark.slow  # three short runs, ~25 s
def test_last_checkpoint_is_the_latest_state_when_the_metric_never_improves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, counter = fit("--trainer.max_epochs=3")
    assert isinstance(trainer.checkpoint_callback, ModelCheckpoint)  # the config's Lightning class, upgraded
    assert counter.batches == 6
    assert step_of("best.ckpt") == (2, 0)  # the only "improvement": the first validation
    assert step_of("last.ckpt") == (6, 2)  # every epoch, not only improving ones

    # A finished run resumed with --ckpt_path last trains nothing again.
    trainer, counter = fit("--trainer.max_epochs=3", "--ckpt_path=last")
    assert counter.batches == 0 and trainer.global_step == 6

    # A longer run continues from the latest state: one more epoch, not three.
    trainer, counter = fit("--trainer.max_epochs=4", "--ckpt_path=last")
    assert counter.batches == 2 and step_of("last.ckpt") == (8, 3)
    assert step_of("best.ckpt") == (2, 0)


def test_last_checkpoint_is_written_when_training_stops_mid_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(
        "--trainer.max_epochs=3", "--trainer.max_steps=5"
    )  # stops after the first batch of epoch 2, no validation
    assert step_of("last.ckpt")[0] == 5
    assert step_of("best.ckpt") == (2, 0)
