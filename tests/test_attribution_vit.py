"""GradCAM and attention explanations of timm ViTs, with class, register and no prefix tokens."""

import copy

import pytest
import timm
import torch
from torch import nn

from lit_xai.attribution import AttentionRollout, GradCAM, LastLayerAttention
from lit_xai.players import PatchGrid

DEPTH = 2
VARIANTS = {
    "cls": dict(),
    "registers": dict(reg_tokens=4),
    "no_embed_class": dict(no_embed_class=True),
    "registers_no_embed_class": dict(reg_tokens=4, no_embed_class=True),
    "qk_norm": dict(qk_norm=True),
}
NO_CLASS_TOKEN = dict(class_token=False, global_pool="avg", reg_tokens=2)


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=5,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=DEPTH,
        num_heads=2,
        **kwargs,
    )
    if kwargs.get("qk_norm"):  # fresh LayerNorms are the identity map up to scale; make them matter
        for block in model.blocks:
            nn.init.normal_(block.attn.q_norm.weight, 1.0, 0.5)
            nn.init.normal_(block.attn.k_norm.bias, 0.0, 0.5)
    return model.eval()


def reference_attention(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's own attention weights: run the unfused path and read the softmax entering attn_drop."""
    model = copy.deepcopy(model)
    maps = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda module, args, out: maps.append(args[0]))
    with torch.no_grad():
        model(x)
    return maps


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_attention_matches_timms_own_weights(variant):
    model = tiny_vit(**VARIANTS[variant])
    prefix = model.num_prefix_tokens
    assert prefix == 1 + VARIANTS[variant].get("reg_tokens", 0)
    x = torch.randn(3, 3, 16, 16)
    maps = [m.mean(1) for m in reference_attention(model, x)]
    eye = torch.eye(maps[0].shape[-1])
    rollout = 0.5 * maps[0] + 0.5 * eye
    for a in maps[1:]:
        rollout = (0.5 * a + 0.5 * eye) @ rollout
    players = PatchGrid(16, 4)
    # The class token is first; register tokens follow it; only the 16 patch tokens are players.
    torch.testing.assert_close(AttentionRollout(model, players).attribute(x), rollout[:, 0, prefix:])
    torch.testing.assert_close(LastLayerAttention(model, players).attribute(x), maps[-1][:, 0, prefix:])
    grid = AttentionRollout(model, players).attribute_grid(x)
    assert grid.shape == (3, 4, 4)
    torch.testing.assert_close(grid.flatten(1), rollout[:, 0, prefix:])


@pytest.mark.parametrize("variant", ["cls", "registers_no_embed_class"])
def test_uniform_attention_gives_uniform_rollout(variant):
    """With zeroed qkv every token attends uniformly: each patch gets (1 - 0.5^depth) / N of the class token."""
    model = tiny_vit(**VARIANTS[variant])
    for block in model.blocks:
        nn.init.zeros_(block.attn.qkv.weight)
        nn.init.zeros_(block.attn.qkv.bias)
    tokens = 16 + model.num_prefix_tokens
    x = torch.randn(2, 3, 16, 16)
    rollout = AttentionRollout(model, PatchGrid(16, 4)).attribute(x)
    torch.testing.assert_close(rollout, torch.full((2, 16), (1 - 0.5**DEPTH) / tokens))
    last = LastLayerAttention(model, PatchGrid(16, 4)).attribute(x)
    torch.testing.assert_close(last, torch.full((2, 16), 1 / tokens))
    # Coarser players (2x2 tokens each) receive the attention mass of their tokens.
    coarse = AttentionRollout(model, PatchGrid(16, 8)).attribute(x)
    torch.testing.assert_close(coarse, torch.full((2, 4), 4 * (1 - 0.5**DEPTH) / tokens))


def test_rollout_head_fusion_options():
    model, players, x = tiny_vit(), PatchGrid(16, 4), torch.randn(2, 3, 16, 16)
    values = {
        fusion: AttentionRollout(model, players, head_fusion=fusion).attribute(x)
        for fusion in ("mean", "max", "min")
    }
    assert all(v.shape == (2, 16) and (v > 0).all() for v in values.values())
    assert not torch.allclose(values["max"], values["min"])
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(model, players, head_fusion="sum")


def reference_gradcam(model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module) -> torch.Tensor:
    """GradCAM written out by hand: the layer's tokens minus the prefix, on the 4x4 patch grid (no ReLU)."""
    captured = []
    handle = layer.register_forward_hook(lambda module, args, out: captured.append(out))
    logits = model(x.clone().requires_grad_(True))
    handle.remove()
    tokens = captured[0]
    grads = torch.autograd.grad(logits[:, target].sum(), tokens)[0]
    prefix = model.num_prefix_tokens
    weights = grads[:, prefix:].mean(1, keepdim=True)  # mean over the patch tokens = spatial mean
    return (weights * tokens[:, prefix:]).sum(-1).reshape(x.shape[0], 4, 4).detach()


@pytest.mark.parametrize("variant", [*VARIANTS, "no_class_token"])
def test_gradcam_uses_patch_tokens_only(variant):
    model = tiny_vit(**(NO_CLASS_TOKEN if variant == "no_class_token" else VARIANTS[variant]))
    x = torch.randn(3, 3, 16, 16)
    cam = GradCAM(model, PatchGrid(16, 4), relu=False)
    assert cam.layer_name == f"blocks.{DEPTH - 1}.norm1"
    expected = reference_gradcam(model, x, 3, model.blocks[-1].norm1)
    assert expected.abs().max() > 0
    torch.testing.assert_close(cam.attribute_grid(x, 3), expected)
    torch.testing.assert_close(cam.attribute(x, 3), expected.flatten(1))  # one token per player
    assert cam.attribute_pixels(x, 3).shape == (3, 16, 16)
    coarse = GradCAM(model, PatchGrid(16, 8), relu=False).attribute(x, 3)
    torch.testing.assert_close(coarse, nn.functional.avg_pool2d(expected.unsqueeze(1), 2).flatten(1))


def test_gradcam_on_the_last_block_output_is_blind_with_class_token_pooling():
    """Why the default layer is blocks[-1].norm1: the last block's patch outputs never reach a CLS-pooled head."""
    model, players, x = tiny_vit(), PatchGrid(16, 4), torch.randn(2, 3, 16, 16)
    assert GradCAM(model, players, layer="blocks.1", relu=False).attribute(x, 0).abs().max() == 0
    assert GradCAM(model, players, relu=False).attribute(x, 0).abs().max() > 0
    named = GradCAM(model, players, layer="blocks.0.norm1", relu=False).attribute_grid(x, 0)
    torch.testing.assert_close(named, reference_gradcam(model, x, 0, model.blocks[0].norm1))
    with pytest.raises(ValueError, match="no layer named 'blocks.7'"):
        GradCAM(model, players, layer="blocks.7")


def test_vit_methods_need_image_players():
    from lit_xai.players import FeatureGroups

    model = tiny_vit()
    for cls in (GradCAM, AttentionRollout, LastLayerAttention):
        with pytest.raises(ValueError, match="PatchGrid"):
            cls(model, FeatureGroups(16))
