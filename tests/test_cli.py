"""train.py: the digits classifier config runs, prints its config, and logs offline to W&B."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_train(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a guard against hangs; a stage takes ~1 min, several times that on a busy machine
    )


def test_print_config_resolves_every_stage_config(tmp_path):
    result = run_train(
        "fit", "--config", str(ROOT / "configs/digits/classifier.yaml"), "--print_config", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "lit_xai.algorithms.classifier.ClassifierModule"
    assert config["model"]["init_args"]["backbone_kwargs"]["patch_size"] == 2
    assert config["trainer"]["logger"]["class_path"].endswith("WandbLogger")


def test_short_fit_writes_checkpoints_and_an_offline_wandb_run(tmp_path):
    result = run_train(
        "fit",
        "--config",
        str(ROOT / "configs/digits/classifier.yaml"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs/digits/classifier/wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline W&B run directory; stderr: {result.stderr[-2000:]}"
    assert list(runs[0].glob("*.wandb")), "the offline run has no .wandb log file"
    checkpoints = tmp_path / "outputs/digits/classifier/checkpoints"
    assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()


def test_unknown_config_key_fails_with_a_clear_message(tmp_path):
    result = run_train(
        "fit",
        "--config",
        str(ROOT / "configs/digits/classifier.yaml"),
        "--model.init_args.learning_rate",
        "0.1",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "learning_rate" in result.stderr


@pytest.mark.parametrize("stage", ["surrogate", "explainer"])
def test_later_stage_without_previous_checkpoint_names_the_file(tmp_path, stage):
    result = run_train(
        "fit",
        "--config",
        str(ROOT / f"configs/digits/{stage}.yaml"),
        "--trainer.fast_dev_run",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "checkpoint not found" in result.stderr


def _model_checkpoints(config: dict) -> list[dict]:
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return [c.get("init_args", {}) for c in callbacks if c.get("class_path", "").endswith("ModelCheckpoint")]


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("configs/*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_rerunning_a_stage_overwrites_the_checkpoint_the_next_stage_reads(path):
    # Lightning's default renames a rerun's best.ckpt to best-v1.ckpt, and the next stage would silently keep
    # reading the old best.ckpt.
    for init_args in _model_checkpoints(yaml.safe_load(path.read_text())):
        assert init_args.get("enable_version_counter") is False, f"{path.name}: {init_args.get('filename')}"
