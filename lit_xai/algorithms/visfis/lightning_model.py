"""Explanation supervision of any classifier as a LightningModule: VisFIS's four objectives and RRR.

VisFIS (Ying, Hase & Bansal, NeurIPS 2022) and Right for the Right Reasons (Ross, Hughes & Doshi-Velez, IJCAI
2017). The training loss is::

    CE(f(x), y) + w_suff · sufficiency + w_unc · uncertainty + w_inv · output invariance
                + w_attr · attribution invariance + w_plaus · plausibility + w_rrr · RRR

with the terms of :mod:`lit_xai.algorithms.visfis.loss`; each weight may be zero, so one module trains a plain
model, RRR, VisFIS, or any mix, for comparison. Human importance comes from the batch's ``annotation``; players
(pixels by default, or patches, or tabular columns) are removed through a masker (zeros by default).

It subclasses :class:`~lit_xai.algorithms.classifier.ClassifierModule`: ``module.model`` is the network,
validation/test are plain accuracy, and checkpoints load wherever a classifier checkpoint does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lit_xai.algorithms.components.classifier import MaskedClassifierModule
from lit_xai.algorithms.components.saliency import build_saliency_masker
from lit_xai.algorithms.components.step_random import step_generator
from lit_xai.algorithms.components.training import LRSchedulerCallable, OptimizerCallable, check_input_batch
from lit_xai.algorithms.visfis.loss import (
    attribution_invariance_loss,
    output_invariance_loss,
    plausibility_loss,
    rrr_loss,
    sufficiency_loss,
    uncertainty_loss,
)
from lit_xai.algorithms.visfis.torch_model import (
    IMPORTANCE_REDUCTIONS,
    check_annotation,
    human_importance,
    invariance_keep,
    model_importance,
)
from lit_xai.attribution.gradients import output_gradient
from lit_xai.masking import Masker
from lit_xai.players import players_for

__all__ = ["VisFISModule"]

TERMS = ("sufficiency", "uncertainty", "output_invariance", "attribution_invariance", "plausibility", "rrr")


class VisFISModule(MaskedClassifierModule):
    """Train a classifier to be right for the right reasons, from human importance annotations.

    Args:
        backbone, num_classes, backbone_kwargs, pretrained, checkpoint_path, lr, weight_decay, warmup_steps,
            label_smoothing, optimizer, lr_scheduler: as for :class:`~lit_xai.algorithms.classifier.ClassifierModule`.
        sufficiency_weight: weight of the sufficiency term.
        uncertainty_weight: weight of the uncertainty term.
        output_invariance_weight: weight of invariance by output alignment.
        attribution_invariance_weight: weight of invariance by attribution alignment.
        plausibility_weight: weight of the plausibility term.
        rrr_weight: ``λ`` of RRR's input-gradient penalty (Ross et al. use 1000 on Decoy MNIST).
        importance_threshold: a player is human-important when more than this fraction of it is annotated.
        importance_reduce: how the input gradient is pooled into a player's model importance: ``"abs"``,
            ``"sum"`` (signed) or ``"square"``.
        masker: ``"baseline"`` (fill removed players) or ``"token_drop"``/``"attention_mask"`` for timm ViTs.
        fill: the ``"baseline"`` fill: ``"zeros"``, a number, ``"mean"`` (give ``masker_kwargs.mean``),
            ``"random"`` (uniform within the sample's range), ``"blur"`` or ``"noise"``.
        masker_kwargs: extra arguments for the masker.
        patch_size: for images, the side of a player in pixels (``None``: pixels).
        feature_groups: for tabular inputs, optional column groups (one list of columns per player).
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
        sufficiency_weight: float = 1.0,
        uncertainty_weight: float = 1.0,
        output_invariance_weight: float = 1.0,
        attribution_invariance_weight: float = 0.0,
        plausibility_weight: float = 1.0,
        rrr_weight: float = 0.0,
        importance_threshold: float = 0.5,
        importance_reduce: str = "abs",
        masker: str = "baseline",
        fill: str | float = "zeros",
        masker_kwargs: dict[str, Any] | None = None,
        patch_size: int | Sequence[int] | None = None,
        feature_groups: list[list[int]] | None = None,
    ) -> None:
        weights = dict(zip(TERMS, (sufficiency_weight, uncertainty_weight, output_invariance_weight,
                                   attribution_invariance_weight, plausibility_weight, rrr_weight)))  # fmt: skip
        negative = {name: w for name, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0 (0 switches a term off), got {negative}")
        if not 0.0 <= importance_threshold < 1.0:
            raise ValueError(
                f"importance_threshold must be in [0, 1) (the annotated fraction above which a player is "
                f"important), got {importance_threshold}"
            )
        if importance_reduce not in IMPORTANCE_REDUCTIONS:
            raise ValueError(
                f"importance_reduce must be one of {IMPORTANCE_REDUCTIONS}, got {importance_reduce!r}"
            )
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
        self.loss_weights = {name: float(w) for name, w in weights.items() if w > 0}

    @property
    def needs_annotation(self) -> bool:
        return bool(self.loss_weights)

    def build_masker(self, x: Tensor) -> Masker:
        hp = self.hparams
        players = players_for(x, patch_size=hp.patch_size, groups=hp.feature_groups)
        players.check_input(x)
        return build_saliency_masker(players, hp.masker, hp.fill, **(hp.masker_kwargs or {}))

    def check_batch(self, batch: Any, check_values: bool = True) -> Tensor | None:
        """Validate a batch; return its annotation (as floats) when a supervision term needs it."""
        check_input_batch(batch)
        if not self.needs_annotation:
            return None
        needed_by = f"VisFISModule ({', '.join(self.loss_weights)} > 0)"
        return check_annotation(batch["input"], batch.get("annotation"), needed_by, check_values)

    def supervision_terms(self, x: Tensor, y: Tensor, annotation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The classification logits and every switched-on supervision term for one batch."""
        w = self.loss_weights
        needs_gradient = any(name in w for name in ("attribution_invariance", "plausibility", "rrr"))
        x_in = x.detach().requires_grad_(needs_gradient)
        logits = self.model(x_in)
        masker = self.masker_for(x)
        human = human_importance(annotation, masker.players)
        important = human > self.hparams.importance_threshold
        terms: dict[str, Tensor] = {}
        if "sufficiency" in w:
            terms["sufficiency"] = sufficiency_loss(self.model, masker, x, y, important)
        if "uncertainty" in w:
            terms["uncertainty"] = uncertainty_loss(self.model, masker, x, important)
        if "output_invariance" in w:
            keep = invariance_keep(important, generator=step_generator(self, 1))  # resumable, see step_random
            terms["output_invariance"] = output_invariance_loss(
                self.model, masker, x, logits, important, keep
            )
        if "attribution_invariance" in w or "plausibility" in w:
            gradient = output_gradient(logits, x_in, y, create_graph=True)
            importance = model_importance(gradient, masker.players, self.hparams.importance_reduce)
            if "attribution_invariance" in w:
                terms["attribution_invariance"] = attribution_invariance_loss(importance, important)
            if "plausibility" in w:
                terms["plausibility"] = plausibility_loss(importance, human)
        if "rrr" in w:
            gradient = output_gradient(logits.log_softmax(-1), x_in, create_graph=True)
            terms["rrr"] = rrr_loss(gradient, annotation)
        return logits, terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        annotation = self.check_batch(batch, check_values=batch_idx == 0)
        x, y = batch["input"], batch["target"]
        if annotation is None:
            logits, terms = self.model(x), {}
        else:
            logits, terms = self.supervision_terms(x, y, annotation)
        cross_entropy = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        loss = cross_entropy + sum(self.loss_weights[name] * value for name, value in terms.items())
        self.log_step(
            "train", loss, logits, y, self.train_accuracy, {"cross_entropy": cross_entropy, **terms}
        )
        return loss
