"""ViT Shapley / FastSHAP stages: the surrogate and the explainer train, stay efficient, and learn Shapley values."""

from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups

TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2)


def save_module(module: L.LightningModule, path: Path) -> str:
    """A checkpoint as Lightning writes it: weights, hyperparameters and what the module's save hook adds."""
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


class DictLoader:
    """Wrap tensors into the toolkit's dict batches."""

    def __init__(self, x, y, batch_size=16):
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)

    def __iter__(self):
        for x, y in self.loader:
            yield {"input": x, "target": y}

    def __len__(self):
        return len(self.loader)


def quick_fit(module, x, y, steps):
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DictLoader(x, y))
    return module


@pytest.fixture(scope="module")
def vit_stages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vit_shapley")
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    classifier = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    surrogate = quick_fit(SurrogateModule(save_module(classifier, tmp / "classifier.ckpt")), x, y, steps=2)
    surrogate_path = save_module(surrogate, tmp / "surrogate.ckpt")
    explainer = quick_fit(ExplainerModule(surrogate_path, num_masks=4), x, y, steps=2).eval()
    return classifier, surrogate, explainer, x, tmp


def test_surrogate_starts_from_classifier_and_drops_tokens(vit_stages):
    classifier, surrogate, _, x, _ = vit_stages
    assert type(surrogate.masker).__name__ == "TokenDrop"
    assert surrogate.players.num_players == 16
    for (name, p), q in zip(classifier.model.named_parameters(), surrogate.teacher.parameters()):
        assert torch.equal(p, q), f"teacher differs from the classifier at {name}"
    assert not any(p.requires_grad for p in surrogate.teacher.parameters())


def test_explainer_is_efficient_and_shaped(vit_stages):
    _, surrogate, explainer, x, _ = vit_stages
    phi = explainer.attribute(x[:5])
    assert phi.shape == (5, 16, 3)
    grand = explainer.net.grand(x[:5])
    null = explainer.net.null_value(x[:5])
    assert torch.allclose(null + phi.sum(1), grand, atol=1e-5)
    # v(∅) with token dropping is the class token alone: the same for every image, so it is cached.
    assert explainer.net.null.shape == (3,)
    target = torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(explainer.attribute(x[:5], target), phi[torch.arange(5), :, target])


def test_explainer_checkpoint_is_self_contained(vit_stages, tmp_path):
    _, _, explainer, x, _ = vit_stages
    path = save_module(explainer, tmp_path / "explainer.ckpt")
    restored = ExplainerModule.load_from_checkpoint(path, weights_only=True).eval()
    assert torch.allclose(restored.attribute(x[:4]), explainer.attribute(x[:4]), atol=1e-6)
    assert torch.equal(restored.net.null, explainer.net.null)


def test_wrong_stage_checkpoint_is_refused(vit_stages):
    *_, tmp = vit_stages
    with pytest.raises(
        ValueError, match="classifier.ckpt was written by ClassifierModule, but SurrogateModule is needed"
    ):
        ExplainerModule(str(tmp / "classifier.ckpt"))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        SurrogateModule(str(tmp / "missing.ckpt"))
    with pytest.raises(ValueError, match="even"):
        ExplainerModule(str(tmp / "surrogate.ckpt"), num_masks=5)


def test_masks_depend_on_seed_rank_and_step_only(vit_stages):
    _, surrogate, *_ = vit_stages
    a = surrogate.mask_generator("train", 0).initial_seed()
    b = surrogate.mask_generator("train", 7).initial_seed()
    assert a == b  # same global step: the batch index does not matter in training
    assert (
        surrogate.mask_generator("val", 0).initial_seed() != surrogate.mask_generator("val", 1).initial_seed()
    )


def test_fastshap_explainer_learns_linear_shapley_values(tmp_path):
    """A tabular FastSHAP explainer of a linear model with zero filling recovers w_c · x (logits link)."""
    torch.manual_seed(0)
    d, classes = 6, 2
    classifier = ClassifierModule("mlp", classes, {"in_features": d, "hidden": []})
    surrogate = SurrogateModule(
        save_module(classifier, tmp_path / "c.ckpt"), masker="baseline", num_features=d
    )
    explainer = ExplainerModule(
        save_module(surrogate, tmp_path / "s.ckpt"),
        num_masks=16,
        link="logits",
        lr=3e-3,
        warmup_steps=0,
        head_kwargs={"hidden": [64, 64]},
    )
    x = torch.randn(512, d)
    quick_fit(explainer, x, torch.zeros(512, dtype=torch.long), steps=400)
    weight = surrogate.model.net[1].weight.detach()  # (C, d)
    x_test = torch.randn(64, d)
    exact = x_test.unsqueeze(-1) * weight.T.unsqueeze(0)  # (B, d, C)
    phi = explainer.eval().attribute(x_test)
    game_null = BaselineFill(FeatureGroups(d))(surrogate.model, x_test, torch.zeros(64, d, dtype=torch.bool))
    assert torch.allclose(explainer.net.null, game_null[0], atol=1e-5)
    error = (phi - exact).pow(2).sum((1, 2)).mean() / exact.pow(2).sum((1, 2)).mean()
    assert error < 0.05, f"relative squared error {error:.3f}"


def test_vit_explainer_on_a_vit_with_registers(tmp_path):
    model = timm.create_model(
        "vit_tiny_patch16_224", num_classes=2, reg_tokens=2, no_embed_class=True, **TINY_VIT
    )
    classifier = ClassifierModule(
        "vit_tiny_patch16_224", 2, dict(TINY_VIT, reg_tokens=2, no_embed_class=True)
    )
    classifier.model.load_state_dict(model.state_dict())
    surrogate = SurrogateModule(
        save_module(classifier, tmp_path / "c.ckpt"), patch_size=4
    )  # 2x2 tokens per player
    explainer = ExplainerModule(save_module(surrogate, tmp_path / "s.ckpt"), num_masks=2).eval()
    x = torch.randn(3, 1, 8, 8)
    phi = explainer.attribute(x)
    assert phi.shape == (3, 4, 2)
    assert torch.allclose(explainer.net.null_value(x) + phi.sum(1), explainer.net.grand(x), atol=1e-5)


def test_evaluation_reads_each_checkpoint_once(vit_stages, tmp_path, monkeypatch):
    """The stage check and the module are built from one read of the file (lit_xai/checkpoint_identity.py)."""
    from lit_xai.evaluation.methods import load_explainers, load_scorer

    _, surrogate, explainer, x, _ = vit_stages
    paths = {"surrogate": save_module(surrogate, tmp_path / "s.ckpt"), "explainer": save_module(explainer, tmp_path / "e.ckpt")}  # fmt: skip
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or load(f, *a, **k))
    explainers = load_explainers({"vit_shapley": paths["explainer"]})
    scorer = load_scorer(paths["surrogate"], explainers)
    assert sorted(reads) == sorted(paths.values())
    assert torch.allclose(explainers["vit_shapley"].attribute(x[:2]), explainer.attribute(x[:2]), atol=1e-6)
    assert scorer.notes == ()  # the explainer's surrogate is the one given: same weights after loading
    with pytest.raises(
        ValueError, match="explainer 'wrong': .* was written by SurrogateModule, but ExplainerModule"
    ):
        load_explainers({"wrong": paths["surrogate"]})
