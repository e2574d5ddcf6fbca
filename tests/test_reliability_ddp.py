"""DDP on CPU (two processes, gloo): the surrogate and explainer stages train through train.py, every rank takes
part in the NaN vote, only rank zero writes checkpoints, configs and the W&B run, and validation counts every sample
of an odd-sized split once. (evaluate.py's numbers under DDP are checked in tests/test_evaluate.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def train(cwd: Path, stage: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["OMP_NUM_THREADS"] = "1"
    args = [
        "fit",
        "--config",
        str(ROOT / f"configs/digits/{stage}.yaml"),
        *DDP,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.warmup_steps=1",
        "--data.init_args.batch_size=16",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_surrogate_and_explainer_train_under_ddp_and_only_rank_zero_writes(tmp_path):
    classifier = ClassifierModule("vit_tiny_patch16_224", 10, TINY_VIT)
    hparams = dict(classifier.hparams, _class_path="lit_xai.algorithms.classifier.ClassifierModule")
    torch.save(
        {"state_dict": classifier.state_dict(), "hyper_parameters": hparams}, tmp_path / "classifier.ckpt"
    )

    surrogate = train(
        tmp_path, "surrogate", f"--model.init_args.classifier_checkpoint={tmp_path / 'classifier.ckpt'}"
    )
    assert surrogate.returncode == 0, surrogate.stderr[-3000:]
    assert "MEMBER: 2/2" in surrogate.stdout + surrogate.stderr  # the second process did join
    stage_dir = tmp_path / "outputs/digits/surrogate"
    assert sorted(p.name for p in (stage_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list((stage_dir / "wandb").glob("offline-run-*"))) == 1, "more than one process logged to W&B"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"

    explainer = train(
        tmp_path,
        "explainer",
        f"--model.init_args.surrogate_checkpoint={stage_dir / 'checkpoints/best.ckpt'}",
        "--model.init_args.num_masks=4",
    )
    assert explainer.returncode == 0, explainer.stderr[-3000:]
    stage_dir = tmp_path / "outputs/digits/explainer"
    names = {p.name for p in (stage_dir / "checkpoints").iterdir()}
    assert {"best.ckpt", "last.ckpt"} <= names and not any("-v1" in name for name in names), names
    # One W&B run holds the explanation images of the config's AttributionLogger: rank zero's.
    assert len(list((stage_dir / "wandb").glob("offline-run-*"))) == 1
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"
    checkpoint = torch.load(stage_dir / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["state_dict"]["net.null"].shape == (10,)  # v(∅) cached and saved under DDP
    assert all(
        torch.isfinite(value).all()
        for value in checkpoint["state_dict"].values()
        if value.is_floating_point()
    )
    # The DDP-trained checkpoint rebuilds on its own, in one process.
    restored = ExplainerModule.load_from_checkpoint(stage_dir / "checkpoints/last.ckpt", weights_only=True)
    assert restored.eval().attribute(torch.randn(2, 1, 8, 8)).shape == (2, 16, 10)


@pytest.mark.parametrize("backbone, kwargs", [("vit_tiny_patch16_224", TINY_VIT), ("cnn", {"in_chans": 1})])
def test_every_trainable_explainer_parameter_gets_a_gradient(tmp_path, backbone, kwargs):
    """DDP (without find_unused_parameters) refuses trainable parameters that the loss does not reach."""
    from lit_xai.algorithms.vit_shapley import SurrogateModule

    def save(module, name):
        torch.save(
            {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / name
        )
        return str(tmp_path / name)

    grid = {} if backbone != "cnn" else {"image_size": 8, "patch_size": 2}
    surrogate = SurrogateModule(save(ClassifierModule(backbone, 10, kwargs), "c.ckpt"), **grid)
    explainer = ExplainerModule(save(surrogate, "s.ckpt"), num_masks=4)
    explainer._shapley_loss(torch.randn(3, 1, 8, 8), torch.Generator().manual_seed(0)).backward()
    unused = [name for name, p in explainer.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"trainable but never used: {unused[:5]}"


class RecordValidation(L.Callback):
    """Test helper: the validation samples all processes saw together, and the logged metrics (rank zero writes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen = 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.seen += len(batch["target"])

    def on_validation_end(self, trainer, pl_module) -> None:
        seen = trainer.strategy.reduce(torch.tensor(float(self.seen)), reduce_op="sum")
        if trainer.is_global_zero:
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
            Path(self.path).write_text(json.dumps({"samples": int(seen), **metrics}))


def validate(cwd: Path, record: Path, *devices: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    args = [
        "validate",
        "--config",
        str(ROOT / "configs/digits/classifier.yaml"),
        *devices,
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
        "--trainer.callbacks+=test_reliability_ddp.RecordValidation",
        f"--trainer.callbacks.path={record}",
        "--model.init_args.backbone_kwargs.embed_dim=16",
        "--model.init_args.backbone_kwargs.depth=1",
        "--data.init_args.batch_size=64",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(record.read_text())


@pytest.mark.slow
def test_validation_counts_every_sample_of_an_odd_split_once_under_ddp(tmp_path):
    """Lightning's DistributedSampler pads 269 validation digits to 270 (one counted twice); best.ckpt is chosen on
    these numbers, so they must be those of one process."""
    one = validate(tmp_path, tmp_path / "one.json", "--trainer.devices=1", "--trainer.accelerator=cpu")
    two = validate(tmp_path, tmp_path / "two.json", *DDP)
    assert one["samples"] == two["samples"] == 269
    assert two["val/accuracy"] == one["val/accuracy"]  # a ratio of counts: exactly equal
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-6)  # sums in another order
