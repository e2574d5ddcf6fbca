"""Small helpers the training stages share: the optimiser and its schedule, batch checks, a temporary eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

__all__ = [
    "LRSchedulerCallable",
    "OptimizerCallable",
    "check_input_batch",
    "configure_optimization",
    "cosine_with_warmup",
    "eval_mode",
    "example_batch",
]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up then cosine decay to zero, stepped every optimisation step (as ViT Shapley trains)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + torch.cos(torch.tensor(min(1.0, progress) * torch.pi)).item())

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def configure_optimization(
    module: L.LightningModule,
    params: Iterable[nn.Parameter],
    optimizer: OptimizerCallable | None = None,
    lr_scheduler: LRSchedulerCallable | None = None,
) -> dict[str, Any]:
    """What ``configure_optimizers`` returns for the training stages.

    By default AdamW with the module's ``hparams.lr`` and ``hparams.weight_decay``, and :func:`cosine_with_warmup`
    over the whole run with ``hparams.warmup_steps``, stepped every optimisation step (as ViT Shapley trains).
    ``optimizer`` / ``lr_scheduler`` come from a config (LightningCLI's ``OptimizerCallable`` and
    ``LRSchedulerCallable``, e.g. ``optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}``) and replace
    the default: a given optimizer takes its settings from its own ``init_args`` (``lr`` and ``weight_decay`` are
    then unused) and keeps the warm-up cosine schedule unless a scheduler is given too; a given scheduler is stepped
    once per epoch, Lightning's default, and one that watches a metric (``ReduceLROnPlateau``) watches ``val/loss``.
    """
    hp = module.hparams
    if optimizer is None:
        built = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    else:
        built = optimizer(params)
    if lr_scheduler is None:
        schedule = cosine_with_warmup(built, int(module.trainer.estimated_stepping_batches), hp.warmup_steps)
        return {"optimizer": built, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
    return {"optimizer": built, "lr_scheduler": {"scheduler": lr_scheduler(built), "monitor": "val/loss"}}


def example_batch(trainer: L.Trainer | None) -> dict[str, Tensor] | None:
    """The first training sample of the trainer's datamodule as a batch of one, or ``None`` if there is none.

    Lets a module check its data in ``setup`` (before any step); without a datamodule the checks run on the first
    training batch instead.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None:
        return None
    try:
        item = dataset[0]
    except (IndexError, TypeError, KeyError):
        return None
    if not isinstance(item, dict):
        return None
    return {k: v.unsqueeze(0) if isinstance(v, Tensor) else v for k, v in item.items()}


def check_input_batch(batch: Any) -> None:
    """Raise a clear ``ValueError`` unless ``batch`` is a dict with ``input`` (images or rows) and ``target``."""
    if not isinstance(batch, dict) or "input" not in batch or "target" not in batch:
        raise ValueError(
            "batches must be dicts with 'input' and 'target' (use a lit_xai DataModule), got "
            f"{type(batch).__name__}" + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
        )
    if batch["input"].dim() not in (2, 4):
        raise ValueError(
            f"'input' must be images (B, C, H, W) or tabular rows (B, F), got shape {tuple(batch['input'].shape)}"
        )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Temporarily put ``model`` in eval mode (dropout off, BatchNorm on running statistics), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
