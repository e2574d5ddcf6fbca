"""Saliency-guided training: exact masking of the lowest-saliency players, the loss, and a short fit."""

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.algorithms.components.losses import prediction_kl
from lit_xai.algorithms.components.saliency import build_saliency_masker, player_saliency
from lit_xai.algorithms.saliency_guided import (
    SaliencyGuidedModule,
    lowest_saliency_keep,
    saliency_guided_loss,
)
from lit_xai.attribution.gradients import input_gradient
from lit_xai.cli import main as cli_main
from lit_xai.data import DigitsDataModule
from lit_xai.masking import BaselineFill, RandomRangeFill
from lit_xai.players import FeatureGroups, PatchGrid, players_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_lowest_saliency_keep_removes_exactly_the_lowest_share():
    saliency = torch.tensor(
        [[5.0, 1.0, 3.0, 0.5, 4.0, 2.0, 9.0, 7.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]
    )
    keep = lowest_saliency_keep(saliency, 0.5)
    assert keep.dtype == torch.bool and keep.shape == saliency.shape
    assert keep[0].tolist() == [True, False, False, False, True, False, True, True]
    # Ties (four zeros) still give exactly floor(k d) removals.
    assert keep[1].tolist() == [False, False, False, False, True, True, True, True]
    for k in (0.1, 0.25, 0.9):
        assert (~lowest_saliency_keep(torch.rand(6, 64), k)).sum(1).eq(int(k * 64)).all()


def test_random_fill_replaces_only_the_masked_pixels_and_leaves_the_rest_bit_identical():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8) * 3 + 1
    players = players_for(x)
    assert isinstance(players, PatchGrid) and players.num_players == 64
    saliency = torch.rand(5, 64)
    keep = lowest_saliency_keep(saliency, 0.3)
    masker = RandomRangeFill(players, generator=torch.Generator().manual_seed(1))
    masked = masker.mask_input(x, keep)
    kept_pixels = players.expand_mask(keep).bool().expand_as(x)
    assert torch.equal(masked[kept_pixels], x[kept_pixels])
    changed = (masked != x).any(dim=1).flatten(1)  # (B, 64): any channel of a pixel changed
    assert changed.sum(1).eq(int(0.3 * 64)).all()
    assert torch.equal(changed, ~keep)  # exactly the lowest-saliency pixels, nothing else
    low = x.amin(dim=(1, 2, 3)).view(5, 1, 1, 1)
    high = x.amax(dim=(1, 2, 3)).view(5, 1, 1, 1)
    assert ((masked >= low) & (masked <= high)).all()
    # A fresh draw per call: two calls give different fills for the masked pixels only.
    again = masker.mask_input(x, keep)
    assert torch.equal(again[kept_pixels], x[kept_pixels]) and not torch.equal(again, masked)


def test_constant_fill_and_tabular_players():
    x = torch.randn(4, 10)
    players = players_for(x)
    assert isinstance(players, FeatureGroups) and players.num_players == 10
    masker = build_saliency_masker(players, fill=-2.5)
    assert isinstance(masker, BaselineFill) and not isinstance(masker, RandomRangeFill)
    keep = lowest_saliency_keep(x.abs(), 0.2)
    masked = masker.mask_input(x, keep)
    assert torch.equal(masked[keep], x[keep]) and (masked[~keep] == -2.5).all()


def test_input_gradient_and_player_saliency_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(6, 2, 4, 4)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    gradient = input_gradient(model, x, target)
    expected = model[1].weight[target].view(6, 2, 4, 4)
    torch.testing.assert_close(gradient, expected)
    grid = PatchGrid(4, 2)
    saliency = player_saliency(gradient, grid)
    manual = expected.abs().sum(1).unfold(1, 2, 2).unfold(2, 2, 2).sum((-1, -2)).flatten(1)
    torch.testing.assert_close(saliency, manual)
    signed = player_saliency(gradient, grid, signed=True)
    torch.testing.assert_close(
        signed, expected.sum(1).unfold(1, 2, 2).unfold(2, 2, 2).sum((-1, -2)).flatten(1)
    )
    assert not x.requires_grad  # the caller's tensor is untouched


def test_loss_is_cross_entropy_plus_kl_and_invariant_to_batch_order():
    torch.manual_seed(0)
    logits, masked = torch.randn(8, 5), torch.randn(8, 5)
    target = torch.randint(0, 5, (8,))
    loss, ce, kl = saliency_guided_loss(logits, masked, target, kl_weight=2.0)
    p, log_p, log_q = logits.softmax(-1), logits.log_softmax(-1), masked.log_softmax(-1)
    torch.testing.assert_close(kl, (p * (log_p - log_q)).sum(1).mean())
    torch.testing.assert_close(ce, F.cross_entropy(logits, target))
    torch.testing.assert_close(loss, ce + 2.0 * kl)
    assert prediction_kl(logits, logits).abs() < 1e-6  # no change, no penalty
    perm = torch.randperm(8)
    torch.testing.assert_close(saliency_guided_loss(logits[perm], masked[perm], target[perm], 2.0)[0], loss)


def test_training_step_gradients_reach_the_parameters():
    torch.manual_seed(0)
    module = SaliencyGuidedModule("cnn", 4, {"in_chans": 1, "channels": (4, 8)}, mask_fraction=0.5)
    batch = {"input": torch.randn(6, 1, 8, 8), "target": torch.randint(0, 4, (6,))}
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in module.model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert module.model.training  # saliency ran in eval mode, and the mode was restored


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_mask_fraction_outside_unit_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        SaliencyGuidedModule("mlp", 10, {"in_features": 64}, mask_fraction=fraction)


def test_a_fraction_that_masks_no_player_fails_before_training():
    module = SaliencyGuidedModule(
        "cnn", 10, {"in_chans": 1, "channels": (4,)}, mask_fraction=0.05, patch_size=4
    )
    before = [p.detach().clone() for p in module.parameters()]
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    with pytest.raises(ValueError, match="masks none of them"):  # 4 patches of 4x4 on 8x8 digits: 0.05*4 < 1
        trainer.fit(module, DigitsDataModule(batch_size=32))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_short_fit_with_a_vit_and_token_dropping():
    L.seed_everything(0)
    vit = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    module = SaliencyGuidedModule(
        "vit_tiny_patch16_224", 10, vit, mask_fraction=0.5, masker="token_drop", patch_size=2
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(module, DigitsDataModule(batch_size=16))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/kl"]) and metrics["train/kl"] >= 0


SMALL_DATA = {
    "digits": [],
    "shapes": ["--data.init_args.num_train=32", "--data.init_args.num_val=32", "--data.init_args.num_test=8"],
}


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_config_fits(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs write to ./outputs: keep the repository clean
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / dataset / "saliency_guided.yaml"),
            "--trainer.fast_dev_run=2",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.batch_size=8",
            *SMALL_DATA[dataset],
        ]
    )
