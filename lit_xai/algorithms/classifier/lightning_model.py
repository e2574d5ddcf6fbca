"""Train any backbone (timm ViT/CNN, small MLP/CNN) with cross-entropy: the model every explainer explains."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_xai.models import build_model

__all__ = ["ClassifierModule", "cosine_with_warmup"]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up then cosine decay to zero, stepped every optimisation step (as ViT Shapley trains)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + torch.cos(torch.tensor(min(1.0, progress) * torch.pi)).item())

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training with torchmetrics accuracy, AdamW and a cosine schedule.

    Args:
        backbone: a model name for :func:`lit_xai.models.build_model` (``"mlp"``, ``"cnn"`` or a timm name).
        num_classes: number of classes.
        backbone_kwargs: extra arguments for the backbone (e.g. ``img_size``, ``patch_size``, ``in_chans``).
        pretrained: start from timm's pretrained weights.
        checkpoint_path: start from local weights.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before the cosine decay.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        backbone: str = "cnn",
        num_classes: int = 10,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(
            backbone,
            num_classes,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            **(backbone_kwargs or {}),
        )
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: dict[str, Tensor], stage: str, accuracy: nn.Module) -> Tensor:
        logits = self.model(batch["input"])
        loss = F.cross_entropy(logits, batch["target"], label_smoothing=self.hparams.label_smoothing)
        accuracy(logits, batch["target"])
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train")
        self.log(f"{stage}/accuracy", accuracy, prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_accuracy)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_accuracy)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_accuracy)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.model(batch["input"]).softmax(-1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = self.trainer.estimated_stepping_batches
        scheduler = cosine_with_warmup(optimizer, int(total), self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
