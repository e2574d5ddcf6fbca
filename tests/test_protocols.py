"""The declared protocol of what a module offers to explainers (issue 14, item 2): every learned module of the
toolkit declares it, and the callbacks read it instead of probing attribute names, so a module of your own that
declares it is explained as it says."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from test_callbacks import (  # tests/ is on sys.path (rootdir-relative)
    TINY_VIT,
    TinyImages,
    save_module,
    trainer,
)
from torch import nn

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.dynamic_selection import DynamicSelectionModule, MaskedPredictorModule
from lit_xai.algorithms.saliency_guided import SaliencyGuidedModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.callbacks import ExplanationQuality
from lit_xai.masking import BaselineFill
from lit_xai.players import PatchGrid
from lit_xai.protocols import ExplainedModel, Explainer, LearnedExplainer


def test_every_learned_module_declares_its_network_players_and_masker(tmp_path):
    classifier = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    surrogate = SurrogateModule(save_module(classifier, tmp_path / "classifier.ckpt"))
    explainer = ExplainerModule(save_module(surrogate, tmp_path / "surrogate.ckpt"), num_masks=4)
    predictor = MaskedPredictorModule(num_classes=2, num_features=6, predictor="mlp")
    selection = DynamicSelectionModule(
        num_classes=2, num_features=6, predictor="mlp", policy="mlp", max_features=3
    )
    guided = SaliencyGuidedModule("cnn", 3, {"in_chans": 1})
    declared = {
        classifier: (classifier.model, None, None),
        guided: (guided.model, None, None),
        surrogate: (surrogate.model, surrogate.players, surrogate.masker),
        explainer: (explainer.net.surrogate, explainer.net.players, explainer.net.masker),
        predictor: (predictor.predictor, predictor.players, predictor.masker),
        selection: (selection.selector.predictor, selection.selector.players, selection.selector.masker),
    }
    for module, (network, players, masker) in declared.items():
        assert isinstance(module, ExplainedModel), type(module).__name__
        assert module.explained_network is network and module.players is players and module.masker is masker
    assert isinstance(explainer, LearnedExplainer)
    assert [m for m in declared if isinstance(m, Explainer)] == [explainer]


class PlainModule(L.LightningModule):
    """A module written elsewhere: its network is not called ``model`` and it removes players with a fill of 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        self.players = PatchGrid(8, 4)
        self.masker = BaselineFill(self.players, fill=0.5)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.backbone(batch["input"]), batch["target"])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class OwnModule(PlainModule):
    """The same module declaring what it offers (lit_xai.protocols.ExplainedModel)."""

    @property
    def explained_network(self) -> nn.Module:
        return self.backbone


def test_a_module_of_your_own_is_explained_as_it_declares(tmp_path):
    module = OwnModule()
    quality = ExplanationQuality(["insertion_deletion"], method="leave_one_out", num_samples=4)
    trainer(tmp_path, [quality]).fit(module, TinyImages())
    setup = quality.explain_setup
    assert (
        setup.network is module.backbone and setup.masker is module.masker and setup.players is module.players
    )
    assert 0.0 <= quality.last_values["val/deletion_auc"] <= 1.0


def test_a_module_that_declares_nothing_is_told_how_to(tmp_path):
    with pytest.raises(ValueError, match=r"lit_xai.protocols.ExplainedModel .*network='<submodule>'"):
        trainer(tmp_path, [ExplanationQuality(num_samples=4)]).fit(PlainModule(), TinyImages())
