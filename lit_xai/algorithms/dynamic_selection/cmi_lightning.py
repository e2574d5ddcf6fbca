"""Lightning training of DIME (Gadgil, Covert & Lee, ICLR 2024): a CMI value network trained jointly with the predictor.

Stage 1 is the same as for the amortized greedy policy: :class:`~lit_xai.algorithms.dynamic_selection.
MaskedPredictorModule` pre-trains the predictor on random subsets. Stage 2 is :class:`CMISelectionModule`: at every
step each sample acquires the feature the value network rates best per unit cost (a random one with probability
``epsilon``), the predictor learns from the subsets so visited and the value network regresses the cross-entropy
drop each acquisition caused (:meth:`CMISelector.training_losses`). The exploration schedule follows the authors'
code: when the validation loss has not improved for ``epsilon_patience`` epochs, ``epsilon`` is multiplied by
``epsilon_decay`` and the learning rate is reset; training stops after ``epsilon_steps`` such decays (or at
``max_epochs``). The best state by validation loss (argmax acquisitions, cross-entropy averaged over the subsets of
0..``max_features`` features) is restored at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_xai.algorithms.components.step_random import step_generator
from lit_xai.algorithms.dynamic_selection.cmi_model import CMISelector, tie_hidden_layers
from lit_xai.algorithms.dynamic_selection.lightning_model import SelectorStage, load_predictor_state
from lit_xai.algorithms.dynamic_selection.torch_model import build_network, build_players, check_costs
from lit_xai.checkpoint_identity import RecordsStage

__all__ = ["CMISelectionModule"]


class CMISelectionModule(SelectorStage, RecordsStage, L.LightningModule):
    """Stage 2 of DIME: the value network and the predictor trained jointly with ε-greedy acquisitions.

    Args:
        num_classes, image_size, patch_size, in_chans, num_features, groups, predictor, predictor_kwargs: as in
            :class:`MaskedPredictorModule` (use the same values so the pretrained predictor loads).
        value_network: value network name; it outputs one score per feature.
        value_kwargs: extra value network arguments.
        tie_hidden: share the hidden layers of two MLPs (predictor and value network), as the authors do.
        predictor_checkpoint: stage-1 checkpoint (or a predictor state dict) to start the predictor from.
        max_features: acquisitions per sample during training.
        epsilon: initial exploration probability (0.05 as the authors on MNIST).
        epsilon_decay: factor applied to ``epsilon`` when the validation loss stalls.
        epsilon_patience: epochs without improvement before ``epsilon`` decays.
        epsilon_steps: decays after which training stops.
        lr: Adam learning rate (reset at every decay).
        plateau_factor, plateau_patience, min_lr: the learning-rate plateau schedule on the validation loss.
        costs: optional per-feature acquisition costs (> 0).
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
        value_network: str = "mlp",
        value_kwargs: dict[str, Any] | None = None,
        tie_hidden: bool = True,
        predictor_checkpoint: str | None = None,
        max_features: int = 10,
        epsilon: float = 0.05,
        epsilon_decay: float = 0.2,
        epsilon_patience: int = 3,
        epsilon_steps: int = 3,
        lr: float = 1e-3,
        plateau_factor: float = 0.2,
        plateau_patience: int = 2,
        min_lr: float = 1e-6,
        costs: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        players = build_players(image_size, patch_size, num_features, groups)
        if not 1 <= max_features <= players.num_players:
            raise ValueError(
                f"max_features must be in 1..{players.num_players} (the number of features), got {max_features}"
            )
        if not 0 <= epsilon <= 1 or not 0 < epsilon_decay <= 1 or epsilon_steps < 1 or epsilon_patience < 0:
            raise ValueError(
                "need 0 <= epsilon <= 1, 0 < epsilon_decay <= 1, epsilon_steps >= 1, patience >= 0"
            )
        check_costs(costs, players.num_players)
        self.selector = CMISelector(
            build_network(predictor, players, num_classes, in_chans, predictor_kwargs),
            build_network(value_network, players, players.num_players, in_chans, value_kwargs),
            players,
            costs=costs,
        )
        if tie_hidden:
            tie_hidden_layers(self.selector.predictor, self.selector.value_network)
        if predictor_checkpoint is not None:
            missing, unexpected = self.selector.predictor.load_state_dict(
                load_predictor_state(predictor_checkpoint), strict=False
            )
            if missing or unexpected:
                raise ValueError(
                    f"{predictor_checkpoint} does not match the predictor: missing {list(missing)[:4]}, "
                    f"unexpected {list(unexpected)[:4]}; build it as in the pretraining stage"
                )
        self.epsilon = float(epsilon)
        self.val_loss = MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_loss = MeanMetric()
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self._best: tuple[float, dict[str, Tensor]] | None = None
        self._bad_epochs = 0
        self._decays = 0
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        predictor_loss, value_loss = self.selector.training_losses(
            batch["input"], batch["target"], self.hparams.max_features, self.epsilon, step_generator(self, 0)
        )
        self.log_dict({"train/predictor_loss": predictor_loss, "train/value_loss": value_loss}, prog_bar=True)
        self.log("epsilon", self.epsilon, on_step=False, on_epoch=True)
        return predictor_loss + value_loss

    def _hard(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-sample cross-entropy averaged over the subsets of 0..max_features argmax acquisitions, final logits."""
        steps = self(batch["input"]).logits
        labels = batch["target"].unsqueeze(1).expand(-1, steps.shape[1])
        loss = F.cross_entropy(steps.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        return loss.mean(dim=1), steps[:, -1]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits = self._hard(batch)
        self.val_loss.update(loss)
        self.val_accuracy.update(logits, batch["target"])

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute().item()
        self.log_dict({"val/loss": loss, "val/accuracy": self.val_accuracy.compute()})
        self.val_loss.reset()
        self.val_accuracy.reset()
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return  # the exploration schedule and best state belong to training, not to a standalone validate
        if self._best is None or loss < self._best[0]:
            self._best = (loss, {k: v.detach().clone() for k, v in self.selector.state_dict().items()})
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
        optimizer = self.optimizers().optimizer
        if self._plateau is None:
            self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                factor=self.hparams.plateau_factor,
                patience=self.hparams.plateau_patience,
                min_lr=self.hparams.min_lr,
            )
            if self._plateau_state is not None:  # resumed: the plateau's counters continue where they were
                self._plateau.load_state_dict(self._plateau_state)
        self._plateau.step(loss)
        if self._bad_epochs > self.hparams.epsilon_patience:
            # Explore less once the current amount of exploration stops helping (the authors' schedule).
            self.epsilon *= self.hparams.epsilon_decay
            self._bad_epochs = 0
            self._decays += 1
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr
            if self._decays >= self.hparams.epsilon_steps:
                self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if self._best is not None:
            self.selector.load_state_dict(self._best[1])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cmi_selection"] = {
            "epsilon": self.epsilon,
            "bad_epochs": self._bad_epochs,
            "decays": self._decays,
            "best": self._best,
            "plateau": self._plateau.state_dict() if self._plateau is not None else self._plateau_state,
        }
        super().on_save_checkpoint(checkpoint)  # the stage record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("cmi_selection", {})
        self.epsilon = saved.get("epsilon", self.epsilon)
        self._bad_epochs, self._decays = saved.get("bad_epochs", 0), saved.get("decays", 0)
        self._best = saved.get("best")
        self._plateau_state = saved.get("plateau")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits = self._hard(batch)
        self.test_loss.update(loss)
        self.test_accuracy(logits, batch["target"])
        self.log("test/loss", self.test_loss)
        self.log("test/accuracy", self.test_accuracy)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        selection = self(batch["input"])
        return {"order": selection.order, "probs": selection.logits.softmax(-1)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.selector.parameters(), lr=self.hparams.lr)
