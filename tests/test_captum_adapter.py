"""captum's classes through our adapter (lit_xai.attribution.captum_adapter) against our own methods: captum is the
independent implementation, so each pair agreeing checks both, and checks that the adapter plays our game."""

import sys

import pytest
import timm
import torch

from lit_xai.attribution import IntegratedGradients, LeaveOneOut
from lit_xai.attribution.captum_adapter import CaptumAttribution, split_captum_options
from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.models import SmallCNN
from lit_xai.players import PatchGrid
from lit_xai.shapley import ModelGame, exact_shapley

captum_attr = pytest.importorskip("captum.attr")  # noqa: F841  (in the dev extra: never skipped in CI)


def cnn_setup():
    torch.manual_seed(0)
    model = SmallCNN(in_chans=3, num_classes=5).eval()
    players = PatchGrid(8, 4)  # 4 players
    mean = torch.tensor([0.2, -0.1, 0.3])
    return model, players, BaselineFill(players, fill="mean", mean=mean), torch.randn(3, 3, 8, 8)


def vit_setup():
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", num_classes=4, img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2
    ).eval()
    players = PatchGrid(8, 4)
    return model, players, TokenDrop(players), torch.randn(3, 3, 8, 8)


@pytest.mark.parametrize("setup", [cnn_setup, vit_setup], ids=["baseline_fill", "token_drop"])
@pytest.mark.parametrize(
    ("method", "options"),
    [("FeatureAblation", {}), ("Occlusion", {"sliding_window_shapes": [1, 1], "perturbations_per_eval": 3})],
)
def test_ablation_and_one_patch_occlusion_are_our_leave_one_out(setup, method, options):
    model, players, masker, x = setup()
    target = torch.tensor([0, 2, 1])
    ours = LeaveOneOut(model, players, masker=masker).attribute(x, target)
    theirs = CaptumAttribution(model, players, method, masker=masker, **options).attribute(x, target)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_exact_shapley_values_are_our_enumeration_through_token_dropping():
    model, players, masker, x = vit_setup()
    game = ModelGame(model, masker, x, link="softmax", target=torch.tensor([3, 0, 1]))
    ours = exact_shapley(game, players.num_players)[..., 0]
    theirs = CaptumAttribution(model, players, "ShapleyValues", masker=masker).attribute(
        x, torch.tensor([3, 0, 1])
    )
    torch.testing.assert_close(theirs, ours.float(), rtol=1e-5, atol=1e-6)


def test_the_keep_mask_game_is_captum_on_pixels_with_players_as_feature_mask():
    # What a captum user writes by hand on a baseline-filled model, and what the adapter runs, agree.
    model, players, masker, x = cnn_setup()
    feature_mask = torch.arange(players.num_players).reshape(1, 1, 2, 2)
    feature_mask = feature_mask.repeat_interleave(4, 2).repeat_interleave(4, 3)  # (1, 1, 8, 8) patch index
    pixels = captum_attr.FeatureAblation(lambda z: model(z).softmax(-1)).attribute(
        x, target=2, baselines=masker.baseline(x).expand_as(x).contiguous(), feature_mask=feature_mask
    )
    by_hand = pixels[:, 0, ::4, ::4].flatten(1)  # one value per patch, repeated over its pixels
    adapted = CaptumAttribution(model, players, "FeatureAblation", masker=masker).attribute(x, 2)
    torch.testing.assert_close(adapted, by_hand, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_is_ours_with_the_masker_fill_as_baseline():
    model, players, masker, x = cnn_setup()
    target = torch.tensor([4, 0, 2])
    ours = IntegratedGradients(model, players, steps=16, baseline=masker.baseline(x)).attribute(x, target)
    theirs = CaptumAttribution(model, players, "IntegratedGradients", masker=masker, n_steps=16).attribute(
        x, target
    )
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    # Completeness: the players' values add up to f(x) - f(fill) for a quadrature this fine on a small CNN.
    gap = model(x).gather(1, target[:, None]) - model(masker.baseline(x).expand_as(x)).gather(
        1, target[:, None]
    )
    torch.testing.assert_close(theirs.sum(1), gap[:, 0].detach(), rtol=1e-2, atol=1e-3)


def test_sampling_methods_are_seeded_and_leave_the_callers_random_state_alone():
    model, players, masker, x = vit_setup()
    kernel = CaptumAttribution(model, players, "KernelShap", masker=masker, n_samples=24, seed=3)
    state = torch.random.get_rng_state()
    first = kernel.attribute(x, 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    kernel.generator.manual_seed(3)  # what the evaluation does before each batch
    torch.testing.assert_close(kernel.attribute(x, 1), first, rtol=0, atol=0)
    assert first.shape == (3, players.num_players) and bool(first.abs().sum() > 0)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("LayerGradCam", {}, "layer and neuron methods"),
        ("FeaturePermutation", {}, "shuffles features across the batch"),
        ("NotAMethod", {}, "not a captum attribution class; choose from"),
        ("IntegratedGradients", {"steps": 8}, "unknown option 'steps'; it accepts"),
        ("FeatureAblation", {"baselines": 0.5}, "baselines are set by the masker"),
        ("KernelShap", {"return_input_shape": False}, "unknown option 'return_input_shape'"),
    ],
)
def test_what_cannot_be_adapted_is_named(method, options, message):
    with pytest.raises(ValueError, match=message):
        split_captum_options(method, options)


def test_without_captum_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r'pip install "lit_xai\[captum\]"'):
        split_captum_options("IntegratedGradients", {})
