"""The first hour's snags (issue 14, item 6): each test failed before its fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from lightning.pytorch.loggers import WandbLogger
from packaging.version import Version

from lit_xai import demo


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

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    requirement = next(r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    assert Version(requirement.split(">=")[1]) >= Version("77")
    monkeypatch.chdir(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SetuptoolsDeprecationWarning)
        apply_configuration(Distribution(), "pyproject.toml")
