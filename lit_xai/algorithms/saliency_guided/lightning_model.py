"""Saliency-guided training of any classifier as a LightningModule.

Ismail, Corrada Bravo & Feizi, *Improving Deep Learning Interpretability by Saliency Guided Training*,
NeurIPS 2021. Every training step:

1. the gradient saliency of the true class with respect to the input (absolute by default; computed in eval
   mode, as the authors do, so dropout and BatchNorm batch statistics do not enter it);
2. the ``mask_fraction`` lowest-saliency players (pixels by default) are replaced by uniform random values within
   the sample's range (or another fill, or dropped by a ViT masker);
3. ``loss = CE(f(x), y) + kl_weight · KL(f(x) ‖ f(x̃))``.

It subclasses :class:`~lit_xai.algorithms.classifier.ClassifierModule`: ``module.model`` is the network,
validation/test are plain accuracy, and checkpoints load wherever a classifier checkpoint does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lit_xai.algorithms.components.classifier import MaskedClassifierModule
from lit_xai.algorithms.components.saliency import build_saliency_masker, player_saliency
from lit_xai.algorithms.components.training import LRSchedulerCallable, OptimizerCallable, eval_mode
from lit_xai.algorithms.saliency_guided.loss import saliency_guided_loss
from lit_xai.algorithms.saliency_guided.torch_model import check_fraction, lowest_saliency_keep, num_masked
from lit_xai.attribution.gradients import input_gradient
from lit_xai.masking import Masker
from lit_xai.players import players_for

__all__ = ["SaliencyGuidedModule"]


class SaliencyGuidedModule(MaskedClassifierModule):
    """Saliency-guided training around any backbone.

    Args:
        backbone, num_classes, backbone_kwargs, pretrained, checkpoint_path, lr, weight_decay, warmup_steps,
            label_smoothing, optimizer, lr_scheduler: as for :class:`~lit_xai.algorithms.classifier.ClassifierModule`.
        mask_fraction: ``k``, the share of players masked each step, in ``(0, 1)`` (the paper: 0.5 on MNIST).
        kl_weight: ``λ`` of the KL term (the paper: 1).
        signed: rank players by the signed gradient instead of its absolute value.
        fill: how masked players are filled with the ``"baseline"`` masker: ``"random"`` (uniform within each
            sample's range, the paper), a number, ``"zeros"``, ``"mean"`` (give ``masker_kwargs.mean``), ``"blur"``
            or ``"noise"``.
        masker: ``"baseline"``, or ``"token_drop"``/``"attention_mask"`` to drop a timm ViT's masked patches.
        masker_kwargs: extra arguments for the masker.
        patch_size: for images, the side of a player in pixels (``None``: pixels, as the paper); must be the
            ViT's patch size (or a multiple) for the ViT maskers.
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
        mask_fraction: float = 0.5,
        kl_weight: float = 1.0,
        signed: bool = False,
        fill: str | float = "random",
        masker: str = "baseline",
        masker_kwargs: dict[str, Any] | None = None,
        patch_size: int | Sequence[int] | None = None,
    ) -> None:
        check_fraction(mask_fraction)
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            backbone_kwargs=backbone_kwargs,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )

    def build_masker(self, x: Tensor) -> Masker:
        hp = self.hparams
        players = players_for(x, patch_size=hp.patch_size)  # pixels by default, as the paper
        players.check_input(x)
        num_masked(hp.mask_fraction, players.num_players)  # fails early if k masks no player
        return build_saliency_masker(players, hp.masker, hp.fill, **(hp.masker_kwargs or {}))

    def masked_input_keep(self, x: Tensor, target: Tensor) -> Tensor:
        """Keep-mask ``(B, d)``: ``False`` on the ``mask_fraction`` lowest-saliency players of each sample."""
        masker = self.masker_for(x)
        with eval_mode(self.model):
            gradient = input_gradient(self.model, x, target)
        saliency = player_saliency(gradient, masker.players, signed=self.hparams.signed)
        return lowest_saliency_keep(saliency, self.hparams.mask_fraction)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.check_batch(batch)
        x, y = batch["input"], batch["target"]
        keep = self.masked_input_keep(x, y)
        logits = self.model(x)
        masked_logits = self.masker_for(x)(self.model, x, keep)
        loss, cross_entropy, kl = saliency_guided_loss(
            logits, masked_logits, y, self.hparams.kl_weight, self.hparams.label_smoothing
        )
        self.log_step(
            "train", loss, logits, y, self.train_accuracy, {"cross_entropy": cross_entropy, "kl": kl}
        )
        return loss
