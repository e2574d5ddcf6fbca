"""The two learned stages of ViT Shapley (Covert, Kim & Lee, ICLR 2023) as LightningModules.

1. :class:`SurrogateModule` fine-tunes a copy of the classifier to predict well when patches are missing:
   ``KL(p_classifier(x) ‖ q_surrogate(x_S))`` with ``|S|`` uniform on ``0..d`` (one subset per image per step by
   default), the original classifier frozen as the teacher.
2. :class:`ExplainerModule` trains an amortized explainer whose backbone starts from the surrogate:
   ``d · MSE(v(∅) + 1_Sᵀ φ(x), v(S))`` over ``num_masks`` paired Shapley-kernel subsets per image, with the additive
   efficient normalisation, so ``φ(x)`` estimates the Shapley values of the surrogate's game (FastSHAP's objective).

Both checkpoints are self-contained: the network's settings are stored as hyperparameters, so
``ExplainerModule.load_from_checkpoint(path)`` needs no other file. Masks are drawn from a generator seeded by
``(seed, rank, step)``: a resumed run draws exactly the masks it would have drawn, and DDP ranks draw different ones.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.algorithms.components.exact_mean import log_exact_mean
from lit_xai.algorithms.components.training import (
    LRSchedulerCallable,
    OptimizerCallable,
    configure_optimization,
)
from lit_xai.algorithms.vit_shapley.removal import build_players, build_stage_masker
from lit_xai.algorithms.vit_shapley.torch_model import (
    AmortizedShapley,
    ConvExplainerNet,
    MLPExplainerNet,
    ViTExplainerNet,
)
from lit_xai.checkpoint_identity import RecordsStage, require_stage
from lit_xai.models import backbone_from_checkpoint, backbone_from_weights, build_model
from lit_xai.players import FeatureGroups, PatchGrid, is_vit
from lit_xai.sampling import ShapleySampler, UniformSizeSampler, keyed_seed

__all__ = ["SurrogateModule", "ExplainerModule"]

_VALIDATION_SEED = 12345


class _MaskedStage(RecordsStage, L.LightningModule):
    """Shared plumbing: AdamW with warm-up and cosine decay (or the config's optimizer), step-seeded mask generators."""

    optimizer_callable: OptimizerCallable | None = None
    lr_scheduler_callable: LRSchedulerCallable | None = None

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return configure_optimization(self, params, self.optimizer_callable, self.lr_scheduler_callable)

    def mask_generator(self, stage: str, batch_idx: int) -> torch.Generator:
        """A generator that depends only on (seed, stage, rank, step): reproducible, resumable, distinct per rank."""
        if stage == "train":
            key = (self.hparams.seed, 0, self.global_rank, self.global_step)
        else:  # the same validation masks every epoch, so validation losses are comparable
            key = (self.hparams.seed + _VALIDATION_SEED, 1, self.global_rank, batch_idx)
        return torch.Generator().manual_seed(keyed_seed(*key))


class SurrogateModule(_MaskedStage):
    """Fine-tune a classifier into a surrogate that tolerates missing players.

    Args:
        classifier_checkpoint: checkpoint of the trained classifier (``train.py`` stage 1), or with
            ``classifier_backbone`` the weights of a classifier trained elsewhere (state dict or safetensors).
        classifier_backbone: for a classifier trained outside lit_xai, its architecture:
            ``{"backbone": <timm name>, "num_classes": C, "backbone_kwargs": {...}}`` (stored in the checkpoint,
            which then rebuilds the network on its own).
        masker: ``"auto"`` (token dropping for ViTs, zero filling otherwise), ``"token_drop"``,
            ``"attention_mask"``, ``"baseline"`` or ``"append_mask"``.
        masker_kwargs: options of the masker (e.g. ``{"fill": "mean", "mean": [...]}``).
        patch_size: player size in pixels (defaults to a ViT's patch size).
        image_size: image size (defaults to a ViT's; required for CNNs).
        num_features: number of columns for tabular models.
        masks_per_image: subsets drawn per image per step (1 in ViT Shapley).
        lr: peak learning rate (1e-5 for ImageNet-scale ViTs in the paper; small models like more).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        seed: seed of the mask generator.
        backbone_spec: filled in automatically; lets the checkpoint rebuild the network on its own.
        optimizer, lr_scheduler: the config's optimizer and schedule instead of AdamW with warm-up and cosine decay
            (:func:`~lit_xai.algorithms.components.training.configure_optimization`).
    """

    def __init__(
        self,
        classifier_checkpoint: str | None = None,
        classifier_backbone: dict[str, Any] | None = None,
        masker: str = "auto",
        masker_kwargs: dict[str, Any] | None = None,
        patch_size: int | list[int] | None = None,
        image_size: int | list[int] | None = None,
        num_features: int | None = None,
        masks_per_image: int = 1,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_steps: int = 100,
        seed: int = 0,
        backbone_spec: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_callable, self.lr_scheduler_callable = optimizer, lr_scheduler
        if masks_per_image < 1:
            raise ValueError(f"masks_per_image must be at least 1, got {masks_per_image}")
        if backbone_spec is None:
            if classifier_checkpoint is None:
                raise ValueError("SurrogateModule needs classifier_checkpoint: the classifier to fine-tune")
            if classifier_backbone is not None:
                unknown = sorted(set(classifier_backbone) - {"backbone", "num_classes", "backbone_kwargs"})
                if unknown or not {"backbone", "num_classes"} <= set(classifier_backbone):
                    raise ValueError(
                        "classifier_backbone needs backbone (a timm name) and num_classes, and takes "
                        f"backbone_kwargs; got {sorted(classifier_backbone)}"
                    )
                classifier, backbone_spec = backbone_from_weights(
                    classifier_checkpoint, **classifier_backbone
                )
            else:
                classifier, backbone_spec = backbone_from_checkpoint(classifier_checkpoint)
        else:  # rebuilt from our own checkpoint: the weights come from its state dict
            classifier = build_model(
                backbone_spec["backbone"], backbone_spec["num_classes"], **backbone_spec["backbone_kwargs"]
            )
        # image_size=None means "the ViT's own size": nothing to record, and a None would clash with an image
        # folder's image_size when Lightning merges the module's and the data's hyperparameters for the logger.
        # Callables are not settings a checkpoint can hold (it is read weights-only): the config keeps them.
        self.save_hyperparameters(
            ignore=["optimizer", "lr_scheduler", *(["image_size"] if image_size is None else [])]
        )
        self.hparams.backbone_spec = backbone_spec
        self.teacher = classifier.eval().requires_grad_(False)
        self.model = copy.deepcopy(classifier).requires_grad_(True)
        self.players = build_players(self.model, patch_size, image_size, num_features)
        self.masker = build_stage_masker(self.model, self.players, masker, masker_kwargs)
        self.sampler = UniformSizeSampler(self.players.num_players)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's dropout/batch-norm must never switch to training behaviour
        return self

    @property
    def explained_network(self) -> torch.nn.Module:
        """The surrogate network (lit_xai.protocols.ExplainedModel); ``players`` and ``masker`` are attributes."""
        return self.model

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Surrogate logits with only ``keep``'s players (all players when ``keep`` is None)."""
        if keep is None:
            keep = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
        return self.masker(self.model, x, keep)

    def _masked_kl(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        n = self.hparams.masks_per_image
        with torch.no_grad():
            teacher_probs = self.teacher(x).softmax(-1).repeat_interleave(n, 0)
        keep = self.sampler.sample(x.shape[0] * n, generator=generator).to(x.device)
        logits = self(x.repeat_interleave(n, 0), keep)
        loss = F.kl_div(logits.log_softmax(-1), teacher_probs, reduction="batchmean")
        return loss, logits, teacher_probs

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._masked_kl(batch["input"], self.mask_generator("train", batch_idx))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = batch["input"], batch["target"]
        n = self.hparams.masks_per_image
        loss, logits, teacher_probs = self._masked_kl(x, self.mask_generator("val", batch_idx))
        full = self(x)
        teacher_pred = self.teacher(x).argmax(-1)
        metrics = {
            "val/loss": loss,
            "val/accuracy_all": (full.argmax(-1) == y).float().mean(),
            "val/accuracy_masked": (logits.argmax(-1) == y.repeat_interleave(n)).float().mean(),
            "val/agreement_all": (full.argmax(-1) == teacher_pred).float().mean(),
            "val/agreement_masked": (logits.argmax(-1) == teacher_probs.argmax(-1)).float().mean(),
        }
        for name, value in metrics.items():  # means over every sample, on one process or several
            log_exact_mean(self, name, value, x.shape[0], prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = batch["input"], batch["target"]
        acc = (self(x).argmax(-1) == y).float().mean()
        log_exact_mean(self, "test/accuracy_all", acc, x.shape[0])


def _build_explainer_net(surrogate: torch.nn.Module, players, num_classes: int, head: str, head_kwargs: dict):
    if head == "auto":
        head = "vit" if is_vit(surrogate) else "mlp" if isinstance(players, FeatureGroups) else "conv"
    backbone = copy.deepcopy(surrogate).requires_grad_(True)
    if head == "vit":
        if not isinstance(players, PatchGrid) or not is_vit(backbone):
            raise ValueError("head='vit' needs a ViT surrogate with image players")
        return ViTExplainerNet(backbone, num_classes, players, **head_kwargs)
    if head == "conv":
        if not isinstance(players, PatchGrid):
            raise ValueError("head='conv' needs image players (a patch grid)")
        return ConvExplainerNet(backbone, num_classes, players, **head_kwargs)
    if head == "mlp":
        if not isinstance(players, FeatureGroups):
            raise ValueError("head='mlp' is for tabular players (num_features)")
        return MLPExplainerNet(players.num_features, players.num_players, num_classes, **head_kwargs)
    raise ValueError(f"unknown head {head!r}; choose 'auto', 'vit', 'conv' or 'mlp'")


class ExplainerModule(_MaskedStage):
    """Train an amortized Shapley value explainer for a trained surrogate.

    Args:
        surrogate_checkpoint: checkpoint written by :class:`SurrogateModule`.
        head: ``"auto"`` (``"vit"`` for ViT surrogates, ``"conv"`` for CNNs, ``"mlp"`` for tabular), or one of those.
        head_kwargs: options of the head (e.g. ``{"mlp_layers": 3, "mlp_ratio": 4}``).
        num_masks: paired Shapley-kernel subsets per image per step (32 in ViT Shapley; must be even).
        link: the game's scale: ``"softmax"`` probabilities (default), ``"log_softmax"`` or ``"logits"``.
        normalization: ``"additive"`` efficient normalisation (default) or ``"none"``.
        lr: peak learning rate (1e-4 in ViT Shapley).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        seed: seed of the mask generator.
        surrogate_spec: filled in automatically; lets the checkpoint rebuild everything on its own.
        optimizer, lr_scheduler: as for :class:`SurrogateModule`.
    """

    def __init__(
        self,
        surrogate_checkpoint: str | None = None,
        head: str = "auto",
        head_kwargs: dict[str, Any] | None = None,
        num_masks: int = 32,
        link: str = "softmax",
        normalization: str = "additive",
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_steps: int = 100,
        seed: int = 0,
        surrogate_spec: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_callable, self.lr_scheduler_callable = optimizer, lr_scheduler
        if num_masks < 2 or num_masks % 2:
            raise ValueError(
                f"num_masks must be a positive even number (subsets come in pairs), got {num_masks}"
            )
        if surrogate_spec is None:
            if surrogate_checkpoint is None:
                raise ValueError("ExplainerModule needs surrogate_checkpoint: the surrogate to explain")
            surrogate, surrogate_spec = _load_surrogate(surrogate_checkpoint)
        else:
            spec = surrogate_spec["backbone_spec"]
            surrogate = build_model(spec["backbone"], spec["num_classes"], **spec["backbone_kwargs"])
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.hparams.surrogate_spec = surrogate_spec
        players = build_players(
            surrogate,
            surrogate_spec["patch_size"],
            surrogate_spec["image_size"],
            surrogate_spec["num_features"],
        )
        masker = build_stage_masker(
            surrogate, players, surrogate_spec["masker"], surrogate_spec["masker_kwargs"]
        )
        num_classes = surrogate_spec["backbone_spec"]["num_classes"]
        explainer = _build_explainer_net(surrogate, players, num_classes, head, dict(head_kwargs or {}))
        self.net = AmortizedShapley(explainer, surrogate, masker, link=link, normalization=normalization)
        self.sampler = ShapleySampler(players.num_players, paired=True)

    # lit_xai.protocols.LearnedExplainer: the network explained is the surrogate whose game the explainer estimates.
    @property
    def explained_network(self) -> torch.nn.Module:
        return self.net.surrogate

    @property
    def players(self):
        return self.net.players

    @property
    def masker(self):
        return self.net.masker

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Shapley values ``(B, d)`` for ``target`` or ``(B, d, C)`` for every class (``target=None``)."""
        return self.net.attribute(x, target)

    def _shapley_loss(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, d = self.hparams.num_masks, self.players.num_players
        keep = self.sampler.sample(x.shape[0] * n, generator=generator).to(x.device)
        with torch.no_grad():
            grand = self.net.grand(x)
            null = self.net.null_value(x)
            targets = self.net.value(x.repeat_interleave(n, 0), keep).view(x.shape[0], n, -1)
        phi = self.net(x, grand=grand)
        null = null.unsqueeze(1) if null.dim() == 2 else null
        predicted = null + torch.einsum("bnd,bdc->bnc", keep.view(x.shape[0], n, d).to(phi.dtype), phi)
        return d * F.mse_loss(predicted, targets.to(phi.dtype))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._shapley_loss(batch["input"], self.mask_generator("train", batch_idx))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._shapley_loss(batch["input"], self.mask_generator("val", batch_idx))
        log_exact_mean(self, "val/loss", loss, batch["input"].shape[0], prog_bar=True)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.net(batch["input"])


def _load_surrogate(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The surrogate network and the settings of its players and masker, from a SurrogateModule checkpoint."""
    checkpoint = require_stage(path, SurrogateModule, hint="train one with configs/<dataset>/surrogate.yaml")
    hparams = checkpoint.get("hyper_parameters", {})
    surrogate, backbone_spec = backbone_from_checkpoint(checkpoint, prefix="model.", name=path)
    keys = ("masker", "masker_kwargs", "patch_size", "image_size", "num_features")
    spec = {key: hparams.get(key) for key in keys}
    spec["backbone_spec"] = backbone_spec
    return surrogate.eval(), spec
