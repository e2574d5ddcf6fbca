"""Lightning training of amortized dynamic feature selection (Covert et al., ICML 2023), in two stages.

1. :class:`MaskedPredictorModule` pre-trains the predictor on random feature subsets (subset size uniform on
   ``0..d``), so it can predict from whatever the policy will choose.
2. :class:`DynamicSelectionModule` trains the policy and the predictor jointly through a Concrete relaxation of each
   choice. The temperature is annealed in stages (geometric from 1.0 to 0.1 by default), each stage
   ``epochs_per_temperature`` epochs with a fresh Adam and plateau schedule. Within a stage the best state by the
   relaxed validation loss is carried into the next stage; at the end the best state by the *hard*-selection
   validation loss (argmax choices, as at inference) is restored. Both stages train with a plain ``Trainer.fit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_xai.algorithms.components.exact_mean import log_exact_mean
from lit_xai.algorithms.components.step_random import batch_generator, step_generator
from lit_xai.algorithms.dynamic_selection.torch_model import (
    DynamicSelector,
    build_network,
    build_players,
    check_costs,
)
from lit_xai.checkpoint_identity import RecordsStage
from lit_xai.masking import AppendMask
from lit_xai.models import load_state_dict
from lit_xai.sampling import UniformSizeSampler

__all__ = ["MaskedPredictorModule", "DynamicSelectionModule", "load_predictor_state"]


def load_predictor_state(path: str) -> dict[str, Tensor]:
    """The predictor's weights from a stage-1 or stage-2 Lightning checkpoint or a plain state dict (weights only)."""
    state = load_state_dict(path, prefix="")
    for prefix in ("predictor.", "selector.predictor."):
        if any(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return state


class MaskedPredictorModule(RecordsStage, L.LightningModule):
    """Stage 1: the predictor learns to predict from random subsets of features (mask appended to the input).

    Args:
        num_classes: number of classes.
        image_size: image side(s) for image data (players are ``patch_size`` blocks); leave ``None`` for tabular.
        patch_size: side of the pixel blocks that are selected together (1 = pixels, 2 = 2x2 groups).
        in_chans: image channels.
        num_features: number of columns for tabular data.
        groups: optional column groups that are selected together (tabular only).
        predictor: network name (``"mlp"``, ``"cnn"`` or a timm model); its input size is filled in.
        predictor_kwargs: extra network arguments (e.g. ``hidden``, ``dropout``).
        lr: Adam learning rate.
        plateau_factor: learning-rate factor when the validation loss stalls.
        plateau_patience: epochs without improvement before the learning rate drops.
        val_seed: seed of the fixed validation subsets, so validation losses are comparable across epochs.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int | Sequence[int] | None = None,
        patch_size: int | Sequence[int] = 1,
        in_chans: int = 1,
        num_features: int | None = None,
        groups: list[list[int]] | None = None,
        predictor: str = "mlp",
        predictor_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        plateau_factor: float = 0.2,
        plateau_patience: int = 2,
        val_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.players = build_players(image_size, patch_size, num_features, groups)
        self.predictor = build_network(predictor, self.players, num_classes, in_chans, predictor_kwargs)
        self.masker = AppendMask(self.players)
        self.sampler = UniformSizeSampler(self.players.num_players)
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_full_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_full_accuracy = MulticlassAccuracy(num_classes, average="micro")

    @property
    def explained_network(self) -> torch.nn.Module:
        """The predictor (lit_xai.protocols.ExplainedModel); it sees the mask appended, through ``masker``."""
        return self.predictor

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """Class logits from the features in ``keep`` ``(B, d)`` only."""
        return self.masker(self.predictor, x, keep)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, y = batch["input"], batch["target"]
        keep = self.sampler.sample(
            x.shape[0], generator=step_generator(self, 0), device=x.device
        )  # resumable
        loss = F.cross_entropy(self(x, keep), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = batch["input"], batch["target"]
        generator = torch.Generator().manual_seed(self.hparams.val_seed + batch_idx)
        keep = self.sampler.sample(x.shape[0], generator=generator).to(x.device)
        logits = self(x, keep)
        log_exact_mean(self, "val/loss", F.cross_entropy(logits, y), x.shape[0], prog_bar=True)
        self.val_accuracy(logits, y)
        self.val_full_accuracy(self(x, torch.ones_like(keep)), y)
        self.log("val/accuracy", self.val_accuracy)
        self.log("val/full_accuracy", self.val_full_accuracy, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = batch["input"], batch["target"]
        keep = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
        self.test_full_accuracy(self(x, keep), y)
        self.log("test/full_accuracy", self.test_full_accuracy)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.hparams.plateau_factor, patience=self.hparams.plateau_patience, min_lr=1e-6
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}


class SelectorStage:
    """What a stage with a ``selector`` (the greedy policy's or DIME's) offers: ``lit_xai.protocols.ExplainedModel``
    (the selector's predictor, players and mask appending) and ``forward`` = acquisition up to a budget."""

    @property
    def explained_network(self) -> torch.nn.Module:
        return self.selector.predictor

    @property
    def players(self):
        return self.selector.players

    @property
    def masker(self):
        return self.selector.masker

    def forward(self, x: Tensor, budget: int | None = None):
        """Acquire up to ``budget`` features (default ``max_features``); see the selector's ``select``."""
        return self.selector.select(x, budget=self.hparams.max_features if budget is None else budget)


class DynamicSelectionModule(SelectorStage, RecordsStage, L.LightningModule):
    """Stage 2: joint training of the policy and the predictor with an annealed Concrete relaxation.

    Set the trainer's ``max_epochs`` to ``len(temperatures) * epochs_per_temperature`` (later epochs stay at the
    last temperature). The module logs ``val/loss`` (relaxed) and ``val/hard_loss`` (argmax selections, mean over
    steps 1..``max_features``; with costs, the loss change per unit cost of each pick); monitor ``val/hard_loss`` with ``ModelCheckpoint`` to keep the same best state on
    disk that :meth:`on_train_end` restores in memory.

    Args:
        num_classes, image_size, patch_size, in_chans, num_features, groups, predictor, predictor_kwargs: as in
            :class:`MaskedPredictorModule` (use the same values so the pretrained predictor loads).
        policy: policy network name; it outputs one logit per feature.
        policy_kwargs: extra policy network arguments.
        predictor_checkpoint: stage-1 checkpoint (or a predictor state dict) to start the predictor from.
        max_features: selection steps trained (the largest budget the policy is trained for).
        temperatures: the Concrete temperatures, one stage each; default ``geomspace(1.0, 0.1, 5)``.
        epochs_per_temperature: epochs per temperature stage.
        logit_scale: the policy's logits are divided by this before the relaxation (0.2 as the authors).
        lr: Adam learning rate at the start of every stage.
        plateau_factor: learning-rate factor when the relaxed validation loss stalls.
        plateau_patience: epochs without improvement before the learning rate drops.
        min_lr: smallest learning rate of the plateau schedule.
        costs: optional per-feature acquisition costs (> 0): the policy learns value per unit cost.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int | Sequence[int] | None = None,
        patch_size: int | Sequence[int] = 1,
        in_chans: int = 1,
        num_features: int | None = None,
        groups: list[list[int]] | None = None,
        predictor: str = "mlp",
        predictor_kwargs: dict[str, Any] | None = None,
        policy: str = "mlp",
        policy_kwargs: dict[str, Any] | None = None,
        predictor_checkpoint: str | None = None,
        max_features: int = 10,
        temperatures: list[float] | None = None,
        epochs_per_temperature: int = 10,
        logit_scale: float = 0.2,
        lr: float = 1e-3,
        plateau_factor: float = 0.2,
        plateau_patience: int = 2,
        min_lr: float = 1e-5,
        costs: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        players = build_players(image_size, patch_size, num_features, groups)
        if not 1 <= max_features <= players.num_players:
            raise ValueError(
                f"max_features must be in 1..{players.num_players} (the number of features), got {max_features}"
            )
        self.temperatures = [float(t) for t in (temperatures or np.geomspace(1.0, 0.1, 5))]
        if any(t <= 0 for t in self.temperatures) or epochs_per_temperature < 1:
            raise ValueError("temperatures must be positive and epochs_per_temperature at least 1")
        check_costs(costs, players.num_players)
        self.selector = DynamicSelector(
            build_network(predictor, players, num_classes, in_chans, predictor_kwargs),
            build_network(policy, players, players.num_players, in_chans, policy_kwargs),
            players,
            costs=costs,
        )
        if predictor_checkpoint is not None:
            self._load_predictor(predictor_checkpoint)
        self.val_loss = MeanMetric()
        self.val_hard_loss = MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_hard_loss = MeanMetric()
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")
        # Best states: within the current temperature stage (relaxed val loss) and overall (hard val loss).
        self._stage_best: tuple[float, dict[str, Tensor]] | None = None
        self._best: tuple[float, dict[str, Tensor]] | None = None
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._saved_plateau: dict[str, Any] | None = None  # from a checkpoint, until the schedule is rebuilt

    def _load_predictor(self, path: str) -> None:
        missing, unexpected = self.selector.predictor.load_state_dict(
            load_predictor_state(path), strict=False
        )
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match the predictor: missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]}; "
                f"build it with the same predictor/predictor_kwargs/players as the pretraining stage"
            )

    # -- the temperature schedule ------------------------------------------------------------------------------

    @property
    def temperature(self) -> float:
        """The Concrete temperature of the current epoch."""
        stage = min(self.current_epoch // self.hparams.epochs_per_temperature, len(self.temperatures) - 1)
        return self.temperatures[stage]

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.selector.state_dict().items()}

    def on_train_epoch_start(self) -> None:
        epoch, per_stage = self.current_epoch, self.hparams.epochs_per_temperature
        new_stage = epoch % per_stage == 0 and epoch // per_stage < len(self.temperatures)
        if new_stage and epoch > 0 and self._stage_best is not None:
            self.selector.load_state_dict(self._stage_best[1])
        optimizer = self.optimizers().optimizer
        if new_stage:
            # A fresh optimiser per temperature: moments from a softer relaxation mislead the next one.
            optimizer.state.clear()
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr
            self._stage_best = None
        if new_stage or self._plateau is None:
            self._start_plateau(restore=not new_stage)

    def _start_plateau(self, restore: bool) -> None:
        """A fresh plateau schedule, or (``restore``) the one a checkpoint saved, so a resumed run keeps its count."""
        self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizers().optimizer,
            factor=self.hparams.plateau_factor,
            patience=self.hparams.plateau_patience,
            min_lr=self.hparams.min_lr,
        )
        if restore and self._saved_plateau is not None:
            self._plateau.load_state_dict(self._saved_plateau)
        self._saved_plateau = None

    def on_train_start(self) -> None:
        # Resumed mid-epoch, Lightning skips on_train_epoch_start: rebuild the saved schedule here.
        if self._saved_plateau is not None and self._plateau is None:
            self._start_plateau(restore=True)

    def on_train_end(self) -> None:
        if self._best is not None:
            self.selector.load_state_dict(self._best[1])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the stage record (lit_xai/checkpoint_identity.py)
        # Tensors and floats only, so the checkpoint still loads with weights_only=True.
        checkpoint["dynamic_selection"] = {
            "stage_best": self._stage_best,
            "best": self._best,
            "plateau": self._plateau.state_dict()
            if self._plateau is not None
            else None,  # numbers and strings
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("dynamic_selection", {})
        self._stage_best, self._best = saved.get("stage_best"), saved.get("best")
        self._saved_plateau = saved.get("plateau")

    # -- steps -------------------------------------------------------------------------------------------------

    def _relaxed(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        return self.selector.relaxed_loss(
            batch["input"],
            batch["target"],
            self.hparams.max_features,
            self.temperature,
            self.hparams.logit_scale,
            generator=generator,
        )

    def _hard(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-sample hard-selection loss over steps 1..max_features (argmax choices), and the final logits."""
        selection = self(batch["input"])
        return self.selector.hard_loss(selection, batch["target"]), selection.final_logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._relaxed(batch, step_generator(self, 0))  # Gumbel noise keyed by the step: resumable
        self.log("train/loss", loss, prog_bar=True)
        # Once per epoch (its mean), logged from the steps so a run resumed mid-epoch logs it too.
        self.log("temperature", self.temperature, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        size = batch["target"].shape[0]
        self.val_loss.update(self._relaxed(batch, batch_generator(self, 0, batch_idx)), weight=size)
        hard_loss, logits = self._hard(batch)
        self.val_hard_loss.update(hard_loss)
        self.val_accuracy.update(logits, batch["target"])

    def on_validation_epoch_end(self) -> None:
        loss, hard_loss = self.val_loss.compute().item(), self.val_hard_loss.compute().item()
        self.log_dict(
            {"val/loss": loss, "val/hard_loss": hard_loss, "val/accuracy": self.val_accuracy.compute()}
        )
        for metric in (self.val_loss, self.val_hard_loss, self.val_accuracy):
            metric.reset()
        if self.trainer.sanity_checking:
            return
        # Computed (synchronised) metrics are the same on every rank, so every rank keeps the same states.
        if self._plateau is not None:
            self._plateau.step(loss)
        if self._stage_best is None or loss < self._stage_best[0]:
            self._stage_best = (loss, self._snapshot())
        if self._best is None or hard_loss < self._best[0]:
            self._best = (hard_loss, self._snapshot())

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        hard_loss, logits = self._hard(batch)
        self.test_hard_loss.update(hard_loss)
        self.test_accuracy(logits, batch["target"])
        self.log("test/hard_loss", self.test_hard_loss)
        self.log("test/accuracy", self.test_accuracy)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        selection = self(batch["input"])
        return {"order": selection.order, "probs": selection.logits.softmax(-1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.selector.parameters(), lr=self.hparams.lr)
