"""The ViT maskers on every ViT family timm offers: each is supported exactly or refused with its name.

For each family (tiny random weights, 32x32 images, 8x8 patches -> 16 players): with every patch kept both maskers
give ``model(x)``; token dropping equals running timm's own blocks and head on the kept tokens alone, one image at a
time; attention masking equals token dropping. Families the maskers cannot run exactly are refused in one line.
"""

import pytest
import timm
import torch

from lit_xai.masking import AttentionMask, TokenDrop
from lit_xai.players import PatchGrid
from lit_xai.sampling import ShapleySampler

SUPPORTED = {
    "plain": "vit_tiny_patch16_224",
    "registers (DINOv2-style)": "vit_small_patch14_reg4_dinov2",
    "average pooling": "vit_base_patch16_gap_224",
    "registers + average pooling": "vit_medium_patch16_reg4_gap_256",
    "DeiT distilled": "deit_tiny_distilled_patch16_224",
    "RoPE (Eva)": "vit_medium_patch16_rope_reg1_gap_256",
    "EVA-02": "eva02_tiny_patch14_224",
}
REFUSED = {
    "relative position": ("vit_relpos_small_patch16_224", "VisionTransformerRelPos"),
    "mixed RoPE": ("vit_small_patch16_rope_mixed_224", "mixed"),
    "attention pooling (MAP head)": ("vit_base_patch16_siglip_224", "attention-pooled"),
}
GRID = PatchGrid(32, 8)


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with (
        torch.no_grad()
    ):  # timm's init (layer scale 1e-5, zero biases and heads) would leave outputs near zero
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def kept_tokens_only(model: torch.nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """timm's own pieces run on the prefix tokens and the kept patch tokens of one image, no padding, no masks."""
    embedded = model._pos_embed(model.patch_embed(x))
    tokens, rope = embedded if isinstance(embedded, tuple) else (embedded, None)
    prefix = model.num_prefix_tokens
    tokens = torch.cat([tokens[:, :prefix], tokens[:, prefix:][:, keep]], dim=1)
    for block in model.blocks:
        tokens = block(tokens) if rope is None else block(tokens, rope=rope[keep])
    return model.forward_head(model.norm(tokens))


@pytest.mark.parametrize("family", list(SUPPORTED))
def test_vit_family_is_masked_exactly(family):
    model = tiny(SUPPORTED[family])
    x = torch.randn(6, 3, 32, 32)
    keep = ShapleySampler(GRID.num_players).sample(6, generator=torch.Generator().manual_seed(1))
    everything = torch.ones(6, GRID.num_players, dtype=torch.bool)
    with torch.no_grad():
        full = model(x)
        dropped, masked = TokenDrop(GRID, num_buckets=2)(model, x, keep), AttentionMask(GRID)(model, x, keep)
        torch.testing.assert_close(TokenDrop(GRID)(model, x, everything), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(AttentionMask(GRID)(model, x, everything), full, atol=1e-5, rtol=0)
        for i in range(6):
            reference = kept_tokens_only(model, x[i : i + 1], keep[i])
            torch.testing.assert_close(dropped[i : i + 1], reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(masked, dropped, atol=1e-4, rtol=0)
    assert (dropped - full).abs().max() > 1e-3  # removing patches changes the output: the check has teeth


@pytest.mark.parametrize("family", list(REFUSED))
def test_unsupported_vit_family_is_refused_by_name(family):
    name, words = REFUSED[family]
    try:
        model = tiny(name)
    except RuntimeError:  # not in this timm version
        pytest.skip(f"timm has no {name}")
    x = torch.randn(2, 3, 32, 32)
    keep = torch.ones(2, GRID.num_players, dtype=torch.bool)
    for masker in (TokenDrop(GRID), AttentionMask(GRID)):
        with pytest.raises(ValueError, match=words):
            masker(model, x, keep)


def test_empty_batch_gives_empty_logits():
    model = tiny(SUPPORTED["plain"])
    x, keep = torch.randn(0, 3, 32, 32), torch.ones(0, GRID.num_players, dtype=torch.bool)
    for masker in (TokenDrop(GRID), AttentionMask(GRID)):
        assert masker(model, x, keep).shape == (0, 5)
