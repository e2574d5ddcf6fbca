"""FiniteLossGuard: a NaN loss stops training before the update and before any checkpoint, bad batches and empty
splits are named, NaN weights are never saved; the explainer trains in bf16-mixed on CPU; the mask generators of
DDP ranks differ."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.algorithms.vit_shapley.lightning_model import _MaskedStage
from lit_xai.callbacks.finite_loss import FiniteLossGuard, NonFiniteError, check_batch
from lit_xai.data import DigitsDataModule

TINY_VIT = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)


class Linear(L.LightningModule):
    """A linear classifier whose loss turns NaN at ``nan_at_step`` (as a diverging run's would)."""

    def __init__(self, nan_at_step: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.nan_at_step = nan_at_step

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.layer(batch["input"]), batch["target"])
        return loss * float("nan") if self.global_step == self.nan_at_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(n=8, bad_input_at=None):
    items = [{"input": torch.randn(4), "target": torch.tensor(i % 2)} for i in range(n * 2)]
    if bad_input_at is not None:
        items[bad_input_at * 2]["input"][1] = float("inf")
    return DataLoader(items, batch_size=2)


def trainer(tmp_path, **kwargs):
    checkpoints = ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    kwargs.setdefault("max_steps", 8)
    return L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FiniteLossGuard(), checkpoints],
        **kwargs,
    )


def test_nan_loss_stops_before_the_update_and_any_checkpoint(tmp_path):
    module = Linear(nan_at_step=3)
    with pytest.raises(NonFiniteError, match=r"loss is nan at global step 3.*learning rate.*bf16-mixed"):
        trainer(tmp_path).fit(module, batches())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step=1.ckpt", "step=2.ckpt", "step=3.ckpt"]
    assert all(torch.isfinite(p).all() for p in module.parameters())  # the NaN never reached the weights
    saved = torch.load(tmp_path / "step=3.ckpt", weights_only=True)["state_dict"]["layer.weight"]
    assert torch.equal(saved, module.layer.weight.detach())


def test_non_finite_input_is_named_with_its_batch(tmp_path):
    with pytest.raises(NonFiniteError, match=r"training batch 5 of epoch 0 .*'input' holds 1 NaN/inf"):
        trainer(tmp_path).fit(Linear(), batches(bad_input_at=5))


def test_nan_weights_are_never_saved(tmp_path):
    module = Linear()
    run = trainer(tmp_path, max_steps=1)
    run.fit(module, batches())
    with torch.no_grad():
        module.layer.bias[0] = float("nan")
    with pytest.raises(NonFiniteError, match="refusing to save a checkpoint.*'layer.bias'"):
        run.save_checkpoint(tmp_path / "broken.ckpt")
    assert not (tmp_path / "broken.ckpt").exists()


def test_batches_of_the_wrong_shape_are_named(tmp_path):
    classifier = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    with pytest.raises(ValueError, match=r"images are \(16, 16\) but the model was built for \(8, 8\)"):
        check_batch({"input": torch.zeros(2, 1, 16, 16)}, "validation batch 0", classifier)
    torch.save(
        {"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, tmp_path / "c"
    )
    surrogate = SurrogateModule(str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"training batch 0: expected images of shape \(B, C, 8, 8\)"):
        check_batch({"input": torch.zeros(2, 1, 12, 12)}, "training batch 0", surrogate)
    good = {"input": torch.zeros(2, 1, 8, 8), "annotation": torch.zeros(2, 8, 8)}
    check_batch(good, "batch", surrogate)
    with pytest.raises(ValueError, match=r"annotation has shape \(2, 1, 8, 8\) .* needs \(2, 8, 8\)"):
        check_batch(dict(good, annotation=torch.zeros(2, 1, 8, 8)), "batch", surrogate)
    with pytest.raises(ValueError, match=r"annotation has shape \(2, 3\) .* needs \(2, 5\)"):
        check_batch({"input": torch.zeros(2, 5), "annotation": torch.zeros(2, 3)}, "batch")


def test_empty_split_is_an_error_not_a_silent_skip(tmp_path):
    class NoValidation(DigitsDataModule):
        def build_datasets(self):
            train, val, test = super().build_datasets()
            return train, torch.utils.data.Subset(val, []), test

    with pytest.raises(ValueError, match="val split of NoValidation is empty.*limit_val_batches 0"):
        trainer(tmp_path).fit(ClassifierModule("mlp", 10, {"in_features": 64}), NoValidation())


def test_explainer_trains_in_bf16_mixed_on_cpu(tmp_path):
    torch.manual_seed(0)
    classifier = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    torch.save(
        {"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, tmp_path / "c"
    )
    surrogate = SurrogateModule(str(tmp_path / "c"))
    torch.save(
        {"state_dict": surrogate.state_dict(), "hyper_parameters": dict(surrogate.hparams)}, tmp_path / "s"
    )
    explainer = ExplainerModule(str(tmp_path / "s"), num_masks=4, warmup_steps=0)
    before = [p.detach().clone() for p in explainer.net.explainer.parameters()]
    data = [{"input": torch.randn(1, 8, 8), "target": torch.tensor(0)} for _ in range(16)]
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"])

    L.Trainer(
        max_steps=4,
        precision="bf16-mixed",
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FiniteLossGuard(), Record()],
    ).fit(explainer, DataLoader(data, batch_size=4))
    assert len(losses) == 4 and all(torch.isfinite(loss) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, explainer.net.explainer.parameters()))
    assert all(p.dtype == torch.float32 for p in explainer.parameters())  # bf16 only inside autocast
    phi = explainer.eval().attribute(torch.randn(2, 1, 8, 8))
    assert phi.shape == (2, 16, 3) and torch.isfinite(phi).all()


def test_ddp_ranks_draw_different_masks_and_resume_draws_the_same():
    def masks(rank: int, step: int) -> torch.Tensor:
        # The generator only reads the seed, the rank and the step: a stand-in for the module is enough.
        stage = SimpleNamespace(hparams=SimpleNamespace(seed=0), global_rank=rank, global_step=step)
        return torch.rand(64, generator=_MaskedStage.mask_generator(stage, "train", 0))

    assert not torch.equal(masks(0, 5), masks(1, 5))  # two ranks, one step: different masks
    assert torch.equal(masks(1, 5), masks(1, 5))  # a resumed rank redraws exactly the same masks
    assert not torch.equal(masks(0, 5), masks(0, 6))
