"""Stop a run at the first NaN/inf, with a message that says where and why, before a broken checkpoint is saved.

A loss that turns NaN does not stop PyTorch: the optimizer writes NaN into every weight, training carries on,
and ``ModelCheckpoint`` keeps saving (``last.ckpt`` included) a model that only outputs NaN. :class:`FiniteLossGuard`
checks, on every process:

- each batch before it is used (train, validation, test, predict): floating tensors are finite, images have the
  size the model or its players expect, and annotations have the input's shape without the channel axis;
- each loss right before ``backward`` (so the weights are still intact when the run stops): every process agrees
  on the decision under DDP, so all ranks stop together instead of waiting on one another;
- each checkpoint's weights before it is written;
- the data module's splits when training, validation or testing starts: an empty split is an error, not a silent
  skip; and the model's number of classes against the data's (a 3-class folder must not train a 10-way head).

The ``train.py`` CLI adds it to every run; in plain Lightning use ``Trainer(callbacks=[FiniteLossGuard()])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

__all__ = ["FiniteLossGuard", "NonFiniteError", "check_batch", "check_classes", "check_splits"]

LIKELY_CAUSES = (
    "likely causes: a learning rate too high (lower --model.init_args.lr, add warm-up or "
    "--trainer.gradient_clip_val 1.0), fp16 overflow (use --trainer.precision bf16-mixed), or NaN/inf in the "
    "inputs or targets"
)


class NonFiniteError(FloatingPointError):
    """A loss, input or weight is NaN or infinite."""


def _count_bad(tensor: Tensor) -> int:
    return int((~torch.isfinite(tensor)).sum())


def _image_size(pl_module: L.LightningModule) -> tuple[int, int] | None:
    """The image size a timm ViT backbone was built for (``None`` when the model takes any size)."""
    embed = getattr(getattr(pl_module, "model", None), "patch_embed", None)
    if embed is None or getattr(embed, "dynamic_img_size", False) or getattr(embed, "img_size", None) is None:
        return None
    return tuple(embed.img_size)


def check_batch(batch: Any, where: str, pl_module: L.LightningModule | None = None) -> None:
    """Raise one clear error if ``batch`` holds NaN/inf or has shapes the module cannot use.

    Args:
        batch: a dict batch ``{"input", "target"[, "annotation"]}`` (other batch types: finiteness only).
        where: words naming the batch in the message (e.g. ``"training batch 3 (global step 3)"``).
        pl_module: the module the batch is for; its ``players`` (or its timm ViT's image size) fix the input
            size that is expected.

    Raises:
        NonFiniteError: a floating tensor holds NaN or inf.
        ValueError: the input or the annotation has the wrong shape.
    """
    items = (
        batch.items()
        if isinstance(batch, Mapping)
        else enumerate(batch if isinstance(batch, list | tuple) else [batch])
    )
    for key, value in items:
        if isinstance(value, Tensor) and value.is_floating_point() and (bad := _count_bad(value)):
            raise NonFiniteError(
                f"{where}: {key!r} holds {bad} NaN/inf value(s) of {value.numel()}; clean the data (impute or drop "
                f"those samples) or fix the transform that produced them"
            )
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input"), Tensor):
        return
    x = batch["input"]
    players = getattr(pl_module, "players", None)
    if players is not None and hasattr(players, "check_input"):
        try:
            players.check_input(x)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    elif pl_module is not None and (size := _image_size(pl_module)) and tuple(x.shape[-2:]) != size:
        raise ValueError(
            f"{where}: images are {tuple(x.shape[-2:])} but the model was built for {size}; resize the images "
            f"(e.g. the data module's image_size) or set the backbone's img_size to match"
        )
    annotation = batch.get("annotation")
    if isinstance(annotation, Tensor):
        expected = (x.shape[0], *x.shape[2:]) if x.dim() == 4 else tuple(x.shape)
        if tuple(annotation.shape) != expected:
            raise ValueError(
                f"{where}: annotation has shape {tuple(annotation.shape)} but the input {tuple(x.shape)} needs "
                f"{expected} (one value per pixel or feature, no channel axis); fix the annotation masks"
            )


def check_splits(trainer: L.Trainer, splits: list[str]) -> None:
    """Raise a ``ValueError`` if one of the data module's ``<split>_dataset`` is empty (Lightning would skip it)."""
    data = trainer.datamodule
    for split in splits:
        dataset = getattr(data, f"{split}_dataset", None)
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            fix = (
                " or set --trainer.limit_val_batches 0 to train without validation" if split == "val" else ""
            )
            raise ValueError(
                f"the {split} split of {type(data).__name__} is empty: check the data path and the split "
                f"fractions{fix}"
            )


def model_num_classes(pl_module: L.LightningModule) -> int | None:
    """The number of classes the module predicts: its ``num_classes`` setting, else that of the first network
    inside it that declares one (timm models and our small models do; every head of one module agrees)."""
    value = pl_module.hparams.get("num_classes") if hasattr(pl_module, "hparams") else None
    if isinstance(value, int):
        return value
    for module in pl_module.modules():
        value = getattr(module, "num_classes", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_classes(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Raise one ``ValueError`` when the model's number of classes is not the data's.

    Without it, a 3-class image folder trains a 10-way head and exits 0 (cross-entropy accepts labels below the
    head's width), and a folder with more classes than the head fails later with ``IndexError: Target 3 is out of
    bounds``.
    """
    data = trainer.datamodule
    wanted = getattr(data, "num_classes", None) if data is not None else None
    have = model_num_classes(pl_module)
    if not isinstance(wanted, int) or have is None or wanted == have:
        return
    names = getattr(data, "classes", None)
    listed = (
        f" ({', '.join(map(str, names))})" if isinstance(names, list | tuple) and len(names) <= 20 else ""
    )
    raise ValueError(
        f"the model predicts {have} classes but {type(data).__name__} has {wanted}{listed}: set "
        f"--model.init_args.num_classes {wanted} in the classifier stage (later stages inherit it from its "
        f"checkpoint), or point the data at the folder the model was trained on"
    )


class FiniteLossGuard(Callback):
    """Stop training with a clear error at the first non-finite loss, bad batch, or non-finite checkpoint.

    Args:
        check_inputs: check every batch (finite values, image and annotation shapes) before it is used.
        check_checkpoints: refuse to write a checkpoint whose weights hold NaN/inf.
    """

    def __init__(self, check_inputs: bool = True, check_checkpoints: bool = True) -> None:
        super().__init__()
        self.check_inputs = check_inputs
        self.check_checkpoints = check_checkpoints

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, where: str) -> None:
        if self.check_inputs:
            check_batch(batch, where, pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_classes(trainer, pl_module)
        check_splits(trainer, ["train"] + (["val"] if trainer.limit_val_batches else []))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            check_splits(trainer, ["val"])

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_classes(trainer, pl_module)
        check_splits(trainer, ["test"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        where = (
            f"training batch {batch_idx} of epoch {trainer.current_epoch} (global step {trainer.global_step})"
        )
        self._check(trainer, pl_module, batch, where)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check(trainer, pl_module, batch, f"validation batch {batch_idx}")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check(trainer, pl_module, batch, f"test batch {batch_idx}")

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check(trainer, pl_module, batch, f"predict batch {batch_idx}")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        # Every rank takes part in the vote, so a NaN on one rank stops all of them (none hangs in all-reduce).
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteError(
                f"the training loss is {_describe(loss)} at global step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); stopped before the update, no checkpoint was written for it; "
                f"{LIKELY_CAUSES}"
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        for name, value in checkpoint.get("state_dict", {}).items():
            if isinstance(value, Tensor) and value.is_floating_point() and (bad := _count_bad(value)):
                raise NonFiniteError(
                    f"refusing to save a checkpoint at global step {trainer.global_step}: weight {name!r} holds "
                    f"{bad} NaN/inf value(s); {LIKELY_CAUSES}"
                )


def _describe(loss: Tensor) -> str:
    """``"nan"``, ``"inf"`` or ``"-inf"``, or a note that another process had the bad loss."""
    values = loss.detach().float().flatten()
    bad = values[~torch.isfinite(values)]
    return str(bad[0].item()) if bad.numel() else "finite here but NaN/inf on another process"
