"""Train any backbone (timm ViT/CNN, small MLP/CNN) with cross-entropy: the model every explainer explains.

:class:`ClassifierModule` is the classifier stage itself (``lit_xai.algorithms.classifier``) and the base of every
algorithm that trains a classifier with an extra loss term; :class:`MaskedClassifierModule` adds what those whose
term runs the model on masked inputs share (saliency-guided training, VisFIS).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_xai.algorithms.components.exact_mean import log_exact_mean
from lit_xai.algorithms.components.step_random import step_seed
from lit_xai.algorithms.components.training import (
    LRSchedulerCallable,
    OptimizerCallable,
    check_input_batch,
    configure_optimization,
    example_batch,
)
from lit_xai.checkpoint_identity import RecordsStage
from lit_xai.masking import Masker
from lit_xai.models import build_model

__all__ = ["ClassifierModule", "MaskedClassifierModule"]


class ClassifierModule(RecordsStage, L.LightningModule):
    """Cross-entropy training with torchmetrics accuracy, AdamW and a warm-up cosine schedule (or the config's).

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
        optimizer: an optimizer from the config (LightningCLI ``OptimizerCallable``) instead of AdamW with ``lr``
            and ``weight_decay``; see :func:`~lit_xai.algorithms.components.training.configure_optimization`.
        lr_scheduler: a schedule from the config (``LRSchedulerCallable``) instead of the warm-up cosine one.
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
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # Callables are not settings a checkpoint can hold (they are read weights-only): the config keeps them.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_callable, self.lr_scheduler_callable = optimizer, lr_scheduler
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

    # lit_xai.protocols.ExplainedModel: the classifier's network is explained; its inputs have no fixed players and
    # it takes plain inputs (explainers choose a patch grid and fill missing players with zeros).
    players = None
    masker = None

    @property
    def explained_network(self) -> nn.Module:
        return self.model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: dict[str, Tensor], stage: str, accuracy: nn.Module) -> Tensor:
        logits = self.model(batch["input"])
        loss = F.cross_entropy(logits, batch["target"], label_smoothing=self.hparams.label_smoothing)
        self.log_step(stage, loss, logits, batch["target"], accuracy)
        return loss

    def log_step(
        self,
        stage: str,
        loss: Tensor,
        logits: Tensor,
        target: Tensor,
        accuracy: nn.Module,
        parts: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Update ``accuracy`` and log ``{stage}/loss``, each named part of the loss and ``{stage}/accuracy``.

        Subclasses that add terms to the cross-entropy log them as ``parts``, under the same keys and flags as
        the plain classifier's loss and accuracy, so runs of every algorithm compare metric for metric.
        """
        accuracy(logits, target)
        if stage == "train":  # this process's batch: nothing to average across processes
            self.log(f"{stage}/loss", loss, prog_bar=True)
            for name, value in (parts or {}).items():
                self.log(f"{stage}/{name}", value)
        else:  # the mean over every sample of the split, on one process or several
            log_exact_mean(self, f"{stage}/loss", loss, len(target), prog_bar=stage != "test")
            for name, value in (parts or {}).items():
                log_exact_mean(self, f"{stage}/{name}", value, len(target))
        self.log(f"{stage}/accuracy", accuracy, prog_bar=True)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_accuracy)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_accuracy)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_accuracy)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.model(batch["input"]).softmax(-1)

    def configure_optimizers(self):
        return configure_optimization(
            self, self.parameters(), self.optimizer_callable, self.lr_scheduler_callable
        )


class MaskedClassifierModule(ClassifierModule):
    """A classifier whose training loss also runs the model on inputs with some players masked.

    The common ground of saliency-guided training and VisFIS: the masker depends on the players, which depend on
    the input shape that only the data knows, so it is built on first use (:meth:`build_masker`) and kept for
    that shape; ``setup`` builds it, and validates the data (:meth:`check_batch`), on the first training sample,
    so a wrong dataset or masker fails before training starts rather than at the first step.
    """

    # Class-level defaults: the masker is set per instance by masker_for; no extra __init__ arguments (and so no
    # extra hparams) are needed for it.
    _masker: Masker | None = None
    _masker_shape: tuple[int, ...] | None = None

    def build_masker(self, x: Tensor) -> Masker:
        """The masker (and its players, ``masker.players``) for inputs shaped like ``x``."""
        raise NotImplementedError(f"{type(self).__name__} must define build_masker")

    def check_batch(self, batch: Any) -> Any:
        """Validate a training batch (raise ``ValueError`` with a clear message if it cannot be used)."""
        check_input_batch(batch)

    def masker_for(self, x: Tensor) -> Masker:
        """The masker for inputs shaped like ``x`` (built on first use, rebuilt when the shape changes)."""
        shape = tuple(x.shape[1:])
        if self._masker is None or self._masker_shape != shape:
            self._masker = self.build_masker(x)
            self._masker_shape = shape
            # Random fills ("random", "noise") draw from their own CPU generator (the same numbers on any device),
            # re-seeded every training step (on_train_batch_start).
            if hasattr(self._masker, "generator") and self._masker.generator is None:
                self._masker.generator = torch.Generator()
        return self._masker

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        generator = getattr(self._masker, "generator", None)
        if isinstance(generator, torch.Generator):  # the masker's random fill, keyed by the step (resumable)
            generator.manual_seed(step_seed(self, 0))

    def setup(self, stage: str) -> None:
        if stage == "fit":
            batch = example_batch(self.trainer)
            if batch is not None:  # fail before training starts, not at the first step
                self.check_batch(batch)
                self.masker_for(batch["input"])
