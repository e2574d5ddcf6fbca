"""Shap-CAM on models whose channel Shapley values are known: a CNN whose head is linear in the channel means."""

import pytest
import timm
import torch
from torch import nn

from lit_xai.attribution import ShapCAM, build_attribution
from lit_xai.models import MLP, SmallCNN
from lit_xai.players import FeatureGroups, PatchGrid


def small_cnn(channels=(4, 6)) -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN(in_chans=1, num_classes=3, channels=channels)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def analytic(model: nn.Module, x: torch.Tensor, target: int, groups=None):
    """Zero-filled channels and a linear head on the channel means: phi_k = W[t, k] mean(A_k);
    cam = ReLU(sum_k phi_{g(k)} A_k) with each channel weighted by its group's value."""
    with torch.no_grad():
        features = model.features(model.stem(x))
        per_channel = model.head[-1].weight[target] * features.mean(dim=(2, 3))
    if groups is None:
        groups = [[k] for k in range(features.shape[1])]
    phi = torch.stack([per_channel[:, g].sum(1) for g in groups], dim=1)
    weights = torch.zeros_like(per_channel)
    for value, g in zip(phi.T, groups):
        weights[:, g] = value.unsqueeze(1)
    cam = (weights[:, :, None, None] * features).sum(1).clamp_min(0)
    return phi, cam


def test_exact_channel_values_and_map():
    model, x = small_cnn(), torch.randn(4, 1, 8, 8)
    explainer = build_attribution("shap_cam", model, PatchGrid(8, 2))  # 4x4 players = the 4x4 feature grid
    phi, cam = analytic(model, x, target=1)
    torch.testing.assert_close(explainer.attribute_channels(x, 1), phi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explainer.attribute_grid(x, 1), cam, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explainer.attribute(x, 1), cam.flatten(1), rtol=1e-5, atol=1e-6)
    assert explainer.last_result is None  # 6 channels: enumerated, not sampled
    assert cam.amax() > 0 and (cam == 0).any()  # the ReLU cuts some cells: the comparison is not trivial
    coarse = ShapCAM(model, PatchGrid(8, 4)).attribute(x, 1)  # 2x2 players: each averages 2x2 cells
    torch.testing.assert_close(coarse, nn.functional.avg_pool2d(cam.unsqueeze(1), 2).flatten(1))


def test_grouped_channels():
    model, x = small_cnn(), torch.randn(3, 1, 8, 8)
    phi, cam = analytic(model, x, target=2, groups=[[0, 1], [2, 3], [4, 5]])
    explainer = ShapCAM(model, PatchGrid(8, 2), num_groups=3)
    torch.testing.assert_close(explainer.attribute_channels(x, 2), phi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explainer.attribute_grid(x, 2), cam, rtol=1e-5, atol=1e-6)


def test_wide_layers_use_kernel_shap():
    """24 channels > exact_limit: KernelSHAP recovers the additive values (the regression is exact for them)."""
    model, x = small_cnn(channels=(4, 24)), torch.randn(2, 1, 8, 8)
    explainer = ShapCAM(model, PatchGrid(8, 2))
    phi, cam = analytic(model, x, target=0)
    torch.testing.assert_close(explainer.attribute_channels(x, 0), phi, rtol=1e-4, atol=1e-5)
    assert explainer.last_result is not None and explainer.last_result.converged
    torch.testing.assert_close(explainer.attribute_grid(x, 0), cam, rtol=1e-4, atol=1e-5)


def test_vit_channel_values_are_efficient():
    """On a ViT (embedding dims of blocks[-1].norm1 as channels) the values add up to v(all) - v(none)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=16, patch_size=4, embed_dim=16,
        depth=2, num_heads=2,
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    explainer = ShapCAM(model, PatchGrid(16, 4), link="softmax", num_groups=8, relu=False)
    values = explainer.attribute_channels(x, 3)
    assert values.shape == (2, 8)
    handle = model.blocks[-1].norm1.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    with torch.no_grad():
        cleared = model(x).softmax(-1)[:, 3]
    handle.remove()
    with torch.no_grad():
        full = model(x).softmax(-1)[:, 3]
    torch.testing.assert_close(values.sum(1), full - cleared, rtol=1e-5, atol=1e-6)
    assert explainer.attribute(x, 3).shape == (2, 16)
    assert explainer.attribute_pixels(x, 3).shape == (2, 16, 16)


def test_shap_cam_refusals():
    with pytest.raises(ValueError, match="layer='<module name>'"):
        ShapCAM(MLP(4, 2), PatchGrid(2, 1))
    with pytest.raises(ValueError, match="PatchGrid"):
        ShapCAM(small_cnn(), FeatureGroups(4))
    with pytest.raises(ValueError, match="unknown fill"):
        ShapCAM(small_cnn(), PatchGrid(8, 2), fill="blur")
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        ShapCAM(small_cnn(), PatchGrid(8, 2), layer="conv9")
    with pytest.raises(ValueError, match="equal contiguous groups"):
        ShapCAM(small_cnn(), PatchGrid(8, 2), num_groups=4).attribute(torch.randn(1, 1, 8, 8), 0)
