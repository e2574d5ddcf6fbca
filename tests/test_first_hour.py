"""The first hour's snags (issue 14, item 6): each test failed before its fix."""

from __future__ import annotations

import io
import os
import shlex
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from packaging.version import Version
from PIL import Image
from test_reliability_metrics_log import offline_run_ids  # tests/ is on sys.path

from lit_xai import demo
from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import SurrogateModule
from lit_xai.callbacks.finite_loss import FiniteLossGuard
from lit_xai.cli import closest_file, finish_wandb_run, main, user_errors_exit
from lit_xai.data import ImageFolderDataModule
from lit_xai.evaluation.config import EvaluationSettings, build_parser, check_settings
from lit_xai.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_demo_logs_each_stage_into_its_own_wandb_run(tmp_path, monkeypatch):
    # Every stage builds a WandbLogger as its config does; Lightning reuses a W&B run still in progress, so
    # without wandb.finish() between stages the surrogate and explainer logged into the classifier's run.
    runs = []

    def fake_stage(args):
        logger = WandbLogger(project="lit_xai", name=args[2], save_dir=str(tmp_path), offline=True)
        logger.log_metrics({"val/accuracy": 0.5}, step=0)
        runs.append(logger.experiment.id)

    monkeypatch.setattr(demo, "cli_main", fake_stage)
    demo.train_stages(tmp_path / "outputs", retrain=False, fast=True)
    assert len(runs) == len(demo.STAGES)
    assert len(set(runs)) == len(demo.STAGES), f"stages shared W&B runs: {runs}"
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == len(demo.STAGES)


def test_pyproject_license_is_an_spdx_string_without_setuptools_warnings(monkeypatch):
    # A TOML table as license made setuptools print a deprecation banner on every install; setuptools reads
    # an SPDX string from version 77 on, so the build must ask for at least that version.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from setuptools import SetuptoolsDeprecationWarning
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    root = ROOT
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    requirement = next(r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    assert Version(requirement.split(">=")[1]) >= Version("77")
    monkeypatch.chdir(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SetuptoolsDeprecationWarning)
        apply_configuration(Distribution(), "pyproject.toml")


def test_misspelled_config_path_is_one_line_naming_the_closest_file(tmp_path):
    # jsonargparse printed its ~50-line usage before "File does not exist"; the user needs the path they meant.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LIT_XAI_"))}
    env["PYTHONPATH"] = str(ROOT)
    for script, args, meant, status in (
        (
            "train.py",
            ["fit", "--config", "configs/digits/clasifier.yaml"],
            "configs/digits/classifier.yaml",
            1,
        ),
        ("evaluate.py", ["--config=configs/eval/digit.yaml"], "configs/eval/digits.yaml", 2),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == status, result.stderr[-2000:]
        assert len(lines) == 1, result.stderr[-2000:]
        assert "config file not found" in lines[0] and f"did you mean {meant}?" in lines[0], lines[0]


def test_closest_file_looks_below_the_nearest_existing_folder(tmp_path):
    (tmp_path / "configs/digits").mkdir(parents=True)
    (tmp_path / "configs/digits/surrogate.yaml").write_text("{}")
    assert closest_file(tmp_path / "configs/digit/surrogate.yaml") == str(
        tmp_path / "configs/digits/surrogate.yaml"
    )
    assert closest_file(tmp_path / "configs/digits/nothing_alike.yaml") is None


TINY_RGB_VIT = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=16, depth=1, num_heads=2)


def make_image_folder(root: Path, classes=("ant", "bee", "cat"), per_class=4, size=16) -> Path:
    """``root/<class>/<i>.png``: random RGB images, the layout the README's image-folder commands read."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def save_classifier(path: Path, num_classes: int) -> str:
    """A classifier checkpoint as train.py writes it (LightningCLI records the class path)."""
    module = ClassifierModule("vit_tiny_patch16_224", num_classes, TINY_RGB_VIT)
    hparams = dict(module.hparams, _class_path="lit_xai.algorithms.classifier.ClassifierModule")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


def quick_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = dict(
        max_steps=1,
        limit_val_batches=1,
        logger=CSVLogger(tmp_path / "logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**options, **kwargs})


def test_surrogate_on_an_image_folder_sized_by_the_data(tmp_path):
    # The surrogate's image_size=None ("the ViT's") and the data's image_size=16 were both logged as hparams:
    # Lightning refused to merge them ("Error while merging hparams: the keys ['image_size'] ...").
    root = make_image_folder(tmp_path / "images")
    surrogate = SurrogateModule(save_classifier(tmp_path / "classifier.ckpt", 3))
    data = ImageFolderDataModule(root, image_size=16, batch_size=4, val_fraction=0.25, test_fraction=0.25)
    quick_trainer(tmp_path).fit(surrogate, data)
    assert surrogate.players.image_size == (16, 16)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_truncated_image_is_one_line_naming_the_file(tmp_path, monkeypatch, num_workers):
    # PIL said "OSError: Truncated File Read" after 40 lines of traceback, without saying which file.
    root = make_image_folder(tmp_path / "images")
    broken = root / "bee" / "2.jpg"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(broken, quality=95)
    broken.write_bytes(broken.read_bytes()[:200])
    data = ImageFolderDataModule(
        root, image_size=16, batch_size=32, val_fraction=0.0, test_fraction=0.0, num_workers=num_workers
    )
    data.setup("fit")
    monkeypatch.setenv("LIT_XAI_TRACEBACK", "0")
    with pytest.raises(SystemExit) as stop, user_errors_exit():
        next(iter(data.train_dataloader()))
    line = str(stop.value.code)
    assert "\n" not in line and f"cannot read image {broken}" in line, line
    assert "Traceback" not in line and len(line) < 400, line


def test_empty_class_folder_is_named(tmp_path):
    # An empty class folder still counted as a class: labels shifted and training failed with
    # "IndexError: Target 3 is out of bounds".
    root = make_image_folder(tmp_path / "images")
    (root / "dog").mkdir()
    data = ImageFolderDataModule(root, image_size=16)
    with pytest.raises(ValueError, match=f"class folder {root / 'dog'} holds no images"):
        data.setup("fit")


def test_model_classes_must_match_the_data(tmp_path):
    # The README's commands trained a 10-way head on a 3-class folder and exited 0.
    root = make_image_folder(tmp_path / "images")
    data = ImageFolderDataModule(root, image_size=16, batch_size=4, val_fraction=0.25, test_fraction=0.25)
    model = ClassifierModule("vit_tiny_patch16_224", 10, TINY_RGB_VIT)
    trainer = quick_trainer(tmp_path, callbacks=[FiniteLossGuard()], logger=False)
    with pytest.raises(
        ValueError, match=r"predicts 10 classes but ImageFolderDataModule has 3 \(ant, bee, cat\)"
    ):
        trainer.fit(model, data)
    # A surrogate inherits the classifier's classes: the same check, read from its networks.
    surrogate = SurrogateModule(save_classifier(tmp_path / "classifier.ckpt", 4))
    with pytest.raises(ValueError, match="predicts 4 classes but ImageFolderDataModule has 3"):
        quick_trainer(tmp_path, callbacks=[FiniteLossGuard()], logger=False).fit(surrogate, data)


def test_pretrained_weights_offline_fail_fast_with_the_fix(tmp_path, monkeypatch):
    # Offline, timm's download retried for a minute and ended in an error suggesting neither fix.
    import huggingface_hub.constants
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    downloads = []

    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            downloads.append(name)
            raise OSError("An error happened while trying to locate the file on the Hub")
        return real_create_model(name, **kwargs)

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    real_create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline_create_model)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(FileNotFoundError, match="pretrained false.*checkpoint_path"):
        build_model("vit_tiny_patch16_224", 3, pretrained=True, **TINY_RGB_VIT)
    assert downloads == [], "tried to download with no network"
    # The host answers but the download still fails: the same advice, with the Hub's reason.
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: io.BytesIO())
    with pytest.raises(FileNotFoundError, match="pretrained false.*checkpoint_path.*OSError"):
        build_model("vit_tiny_patch16_224", 3, pretrained=True, **TINY_RGB_VIT)
    assert downloads == ["vit_tiny_patch16_224"]


def test_evaluate_with_fewer_baselines_keeps_the_config_options(tmp_path):
    # configs/eval/digits.yaml gives options for rise, kernel_shap, ...; `--baselines '[gradient]'` stopped with
    # exit 2 ("options for 'rise', which is not in baselines") unless --baseline_kwargs was restated.
    checkpoint = tmp_path / "surrogate.ckpt"
    checkpoint.write_bytes(b"only its existence is checked here")
    parser = build_parser()
    cfg = parser.parse_args(
        [
            "--config",
            str(ROOT / "configs/eval/digits.yaml"),
            "--baselines",
            "[gradient]",
            "--metrics",
            "[insertion_deletion]",
            "--surrogate_checkpoint",
            str(checkpoint),
            "--explainers",
            "[]",
        ]
    )
    settings = EvaluationSettings(**{key: cfg[key] for key in EvaluationSettings.__dataclass_fields__})
    assert "rise" in settings.baseline_kwargs and "sensitivity_n" in settings.metric_kwargs
    check_settings(settings)
    # A misspelled method name in the options is still one clear error.
    settings.baseline_kwargs["rsie"] = {"num_masks": 10}
    with pytest.raises(ValueError, match="options for 'rsie', which is not a baseline"):
        check_settings(settings)


def readme_cpu_commands() -> list[list[str]]:
    """The train.py lines of the README's "On a CPU, without downloads" block, with ``$SMALL`` expanded."""
    text = (ROOT / "README.md").read_text()
    block = text.split("### On a CPU, without downloads", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    small = shlex.split(lines[0].split("=", 1)[1])[0]
    commands = []
    for line in lines[1:]:
        words = shlex.split(line.replace("$SMALL", small))
        assert words[:3] == ["python", "train.py", "fit"], line
        commands.append(words[2:])
    return commands


@pytest.mark.slow  # about 45 s on one thread
def test_readme_cpu_commands_train_the_three_stages_on_a_tiny_folder(tmp_path, monkeypatch):
    commands = readme_cpu_commands()
    assert len(commands) == 3
    monkeypatch.chdir(tmp_path)
    os.symlink(ROOT / "configs", tmp_path / "configs")
    make_image_folder(tmp_path / "my_images", per_class=6, size=24)
    short = [
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    for args in commands:
        try:
            main([*args, *short])
        finally:
            finish_wandb_run()
    for stage in ("classifier", "surrogate", "explainer"):
        assert (tmp_path / f"outputs/image_folder/{stage}/checkpoints/best.ckpt").is_file(), stage


def test_runs_in_one_process_write_their_wandb_data_where_their_working_directory_is(tmp_path, monkeypatch):
    # W&B's service process starts with the first run and resolves a relative save_dir against its own working
    # directory: after a chdir (a notebook, a script running stages in their folders) the next run's data file went
    # under the first run's working directory, and its own offline-run folder had no run-<id>.wandb.
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    short += ["--trainer.enable_progress_bar=false"]
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        try:
            main(["fit", "--config", str(ROOT / "configs/digits/classifier.yaml"), *short])
        finally:
            finish_wandb_run()
    for folder in ("first", "second"):
        assert len(offline_run_ids(tmp_path / folder / "outputs/digits/classifier/wandb")) == 1, folder


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    # --ckpt_path started a second W&B run: the resumed epochs were logged apart from the first ones.
    monkeypatch.chdir(tmp_path)
    fit = [
        "fit",
        "--config",
        str(ROOT / "configs/digits/classifier.yaml"),
        "--trainer.limit_train_batches",
        "2",
    ]
    fit += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    last = "outputs/digits/classifier/checkpoints/last.ckpt"
    for extra in (["--trainer.max_epochs", "1"], ["--trainer.max_epochs", "2", "--ckpt_path", last]):
        try:
            main([*fit, *extra])
        finally:
            finish_wandb_run()
    ids = offline_run_ids(tmp_path / "outputs/digits/classifier/wandb")
    assert len(ids) == 2 and ids[0] == ids[1], ids
