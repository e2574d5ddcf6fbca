"""Optimisers from configs: AdamW with warm-up and cosine decay by default, any torch optimiser/schedule on request."""

import math
from pathlib import Path

import pytest
import torch

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.components.training import configure_optimization, cosine_with_warmup
from lit_xai.cli import main as cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class _Trainer:
    estimated_stepping_batches = 10


def test_the_default_is_adamw_with_warmup_then_cosine_stepped_every_step(monkeypatch):
    module = ClassifierModule(
        backbone="mlp",
        num_classes=3,
        backbone_kwargs={"in_features": 4},
        lr=0.2,
        weight_decay=0.01,
        warmup_steps=4,
    )
    monkeypatch.setattr(ClassifierModule, "trainer", _Trainer())
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]
    assert type(optimizer) is torch.optim.AdamW and config["lr_scheduler"]["interval"] == "step"
    assert optimizer.defaults["lr"] == 0.2 and optimizer.defaults["weight_decay"] == 0.01
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    # Linear warm-up over 4 steps, then half a cosine over the 6 left (Loshchilov & Hutter's SGDR shape, no restart).
    expected = [0.2 * (s + 1) / 4 for s in range(4)] + [
        0.2 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)
    ]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert "optimizer" not in module.hparams and "lr_scheduler" not in module.hparams


def test_cosine_with_warmup_ends_at_zero_and_stays_there():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = cosine_with_warmup(optimizer, total_steps=5, warmup_steps=0)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert (
        rates[0] == 1.0
        and rates[5] == pytest.approx(0.0, abs=1e-12)
        and rates[6] == pytest.approx(0.0, abs=1e-12)
    )


def test_a_config_injects_any_optimizer_and_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs write to ./outputs
    cli = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "digits" / "classifier.yaml"),
            "--model.init_args.optimizer={class_path: torch.optim.SGD, init_args: {lr: 0.05, momentum: 0.9}}",
            "--model.init_args.lr_scheduler={class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 1}}",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9
    (config,) = cli.trainer.lr_scheduler_configs
    assert type(config.scheduler) is torch.optim.lr_scheduler.StepLR and config.interval == "epoch"
    assert config.scheduler.base_lrs == [0.05]
    # The callables stay in the config, not in the checkpoint's settings (checkpoints are read weights-only).
    assert "optimizer" not in cli.model.hparams


def test_an_optimizer_alone_keeps_the_warmup_cosine_schedule(monkeypatch):
    module = ClassifierModule(
        backbone="mlp",
        num_classes=3,
        backbone_kwargs={"in_features": 4},
        warmup_steps=2,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.3),
    )
    monkeypatch.setattr(ClassifierModule, "trainer", _Trainer())
    config = configure_optimization(module, module.parameters(), module.optimizer_callable)
    assert type(config["optimizer"]) is torch.optim.SGD
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.3 / 2)  # first warm-up step
    assert config["lr_scheduler"]["interval"] == "step"
