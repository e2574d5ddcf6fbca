"""Channel players and the channel masker: exact passthrough, analytic channel Shapley values, clear refusals."""

import pytest
import timm
import torch
from torch import nn

from lit_xai.attribution import build_attribution
from lit_xai.channel_masking import ChannelGroups, ChannelMask
from lit_xai.games import ModelGame
from lit_xai.models import SmallCNN
from lit_xai.shapley import exact_shapley, kernel_shap, shapley_values


def small_cnn(channels=(4, 6), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN(in_chans=1, num_classes=3, channels=channels)
    for (
        module
    ) in model.modules():  # non-trivial batch-norm statistics, so the features are not just conv outputs
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=16, patch_size=4, embed_dim=32,
        depth=2, num_heads=4,
    ).eval()  # fmt: skip


def cnn_channel_means(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Spatial means of the ``features`` maps, ``(B, C)``: what SmallCNN's linear head sees."""
    return model.features(model.stem(x)).mean(dim=(2, 3))


def test_channel_groups_map_masks_and_values():
    players = ChannelGroups(6, groups=3)
    assert players.groups == [[0, 1], [2, 3], [4, 5]] and players.num_channels == 6
    keep = torch.tensor([[True, False, True]])
    assert players.expand_mask(keep).tolist() == [[1, 1, 0, 0, 1, 1]]
    values = torch.tensor([[1.0, 2.0, 3.0]])
    assert players.upsample(values).tolist() == [[1, 1, 2, 2, 3, 3]]
    assert players.pool(torch.arange(6.0).unsqueeze(0)).tolist() == [[1, 5, 9]]
    assert ChannelGroups(5).num_players == 5
    assert ChannelGroups(4, groups=[[0, 3], [1, 2]]).expand_mask(torch.tensor([[True, False]])).tolist() == [
        [1, 0, 0, 1]
    ]
    with pytest.raises(ValueError, match="equal contiguous groups"):
        ChannelGroups(10, groups=3)
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        players.pool(torch.zeros(1, 3))


def test_all_kept_is_the_model_exactly():
    cnn, x = small_cnn(), torch.randn(3, 1, 8, 8)
    keep = torch.ones(3, 6, dtype=torch.bool)
    assert torch.equal(ChannelMask(ChannelGroups(6), "features")(cnn, x, keep), cnn(x))
    mean = torch.randn(6)
    assert torch.equal(
        ChannelMask(ChannelGroups(6), "features", fill="mean", mean=mean)(cnn, x, keep), cnn(x)
    )
    vit, images = tiny_vit(), torch.randn(2, 3, 16, 16)
    dims = ChannelMask(ChannelGroups(32, groups=4), "blocks.0")
    assert torch.equal(dims(vit, images, torch.ones(2, 4, dtype=torch.bool)), vit(images))
    heads = ChannelMask(ChannelGroups.heads(vit.blocks[1].attn), "blocks.1.attn.proj", position="input")
    assert torch.equal(heads(vit, images, torch.ones(2, 4, dtype=torch.bool)), vit(images))


@pytest.mark.parametrize("groups", [None, 3, [[0, 5], [1, 2, 3], [4]]])
def test_exact_channel_shapley_with_a_linear_head(groups):
    """SmallCNN's head is linear in the channel means: phi_g = sum_{k in g} W[c, k] mean(A_k) with zero fill."""
    model, x = small_cnn(), torch.randn(4, 1, 8, 8)
    players = ChannelGroups(6, groups=groups)
    game = ModelGame(model, ChannelMask(players, "features"), x, link="logits")
    phi = exact_shapley(game, players.num_players)  # (B, d, C)
    weights = model.head[-1].weight  # (C_out, 6)
    with torch.no_grad():
        per_channel = cnn_channel_means(model, x).unsqueeze(-1) * weights.T  # (B, 6, C_out)
        expected = torch.stack([players.pool(per_channel[..., c]) for c in range(3)], dim=-1)
    torch.testing.assert_close(phi, expected, rtol=1e-5, atol=1e-6)
    assert phi.abs().amin() > 0  # every player matters: the test would catch a masker that ignored keep


def test_mean_fill_shifts_the_reference():
    model, x = small_cnn(), torch.randn(2, 1, 8, 8)
    mean = torch.rand(6)
    masker = ChannelMask(ChannelGroups(6), "features", fill="mean", mean=mean)
    phi = shapley_values(model, masker, x, method="exact", link="logits", target=1)[..., 0]
    with torch.no_grad():
        expected = (cnn_channel_means(model, x) - mean) * model.head[-1].weight[1]
    torch.testing.assert_close(phi, expected, rtol=1e-5, atol=1e-6)
    # A per-element mean (one sample's activation shape) fills each position with its own value.
    per_element = mean.view(6, 1, 1).expand(6, 4, 4)  # features are 4x4 after one pooling
    masker = ChannelMask(ChannelGroups(6), "features", fill="mean", mean=per_element)
    phi = shapley_values(model, masker, x, method="exact", link="logits", target=1)[..., 0]
    torch.testing.assert_close(phi, expected, rtol=1e-5, atol=1e-6)


def test_kernel_shap_and_other_estimators_on_channels():
    """24 channels (past exact enumeration's comfort): KernelSHAP, permutation sampling and leave-one-out recover
    the additive answer."""
    model, x = small_cnn(channels=(4, 24)), torch.randn(2, 1, 8, 8)
    players = ChannelGroups(24)
    masker = ChannelMask(players, "features")
    with torch.no_grad():
        expected = cnn_channel_means(model, x) * model.head[-1].weight[2]
    game = ModelGame(model, masker, x, link="logits", target=2)
    result = kernel_shap(game, 24, generator=torch.Generator().manual_seed(0))
    assert result.converged
    torch.testing.assert_close(result.values[..., 0], expected, rtol=1e-4, atol=1e-5)
    for name, kwargs in [("permutation_shap", dict(max_evaluations=24 * 4 + 2)), ("leave_one_out", {})]:
        explainer = build_attribution(name, model, players, masker=masker, link="logits", **kwargs)
        torch.testing.assert_close(explainer.attribute(x, target=2), expected, rtol=1e-4, atol=1e-5)


def test_vit_embedding_dimensions_at_the_final_norm():
    """A class-token ViT's head is linear in the final norm's class token: phi_g = sum_{k in g} W[c, k] cls_k."""
    model, x = tiny_vit(), torch.randn(2, 3, 16, 16)
    players = ChannelGroups(32, groups=8)
    phi = shapley_values(model, ChannelMask(players, "norm"), x, method="exact", link="logits", target=3)[
        ..., 0
    ]
    with torch.no_grad():
        cls = model.forward_features(x)[:, 0]
    expected = players.pool(cls * model.head.weight[3])
    torch.testing.assert_close(phi, expected, rtol=1e-4, atol=1e-5)


def test_vit_heads_removed_equal_zeroed_projection_columns():
    """Zeroing head h at the projection's input is the same as zeroing proj.weight's columns of head h."""
    model, x = tiny_vit(), torch.randn(2, 3, 16, 16)
    attn = model.blocks[0].attn
    players = ChannelGroups.heads(attn)
    assert players.num_players == 4 and players.num_channels == 32
    keep = torch.tensor([[True, False, True, True], [False, True, True, False]])
    masked = ChannelMask(players, "blocks.0.attn.proj", position="input")(model, x, keep)
    expected = []
    for row in range(2):
        pruned = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=16, patch_size=4, embed_dim=32,
            depth=2, num_heads=4,
        ).eval()  # fmt: skip
        pruned.load_state_dict(model.state_dict())
        with torch.no_grad():
            pruned.blocks[0].attn.proj.weight.mul_(players.expand_mask(keep[row : row + 1]))
            expected.append(pruned(x[row : row + 1]))
    torch.testing.assert_close(masked, torch.cat(expected), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(masked, model(x), atol=1e-3)


def test_channel_mask_refuses_what_it_cannot_do():
    model, x = small_cnn(), torch.randn(2, 1, 8, 8)
    masker = ChannelMask(ChannelGroups(6), "features")
    with pytest.raises(ValueError, match=r"keep must have shape \(batch, 6\)"):
        masker(model, x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep has 3 rows but the input batch has 2"):
        masker(model, x, torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1 valued"):
        masker(model, x, torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match=r"has 6 channels .* players have 5"):
        ChannelMask(ChannelGroups(5), "features")(model, x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        ChannelMask(ChannelGroups(6), "conv9")(model, x, torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs the mean"):
        ChannelMask(ChannelGroups(6), "features", fill="mean")
    with pytest.raises(ValueError, match="neither one value per channel"):
        ChannelMask(ChannelGroups(6), "features", fill="mean", mean=torch.zeros(6, 2))(
            model, x, torch.ones(2, 6, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="ChannelGroups players"):
        ChannelMask(object(), "features")  # type: ignore[arg-type]
    model.spare = nn.Identity()  # registered, never run by SmallCNN.forward
    with pytest.raises(ValueError, match="was not called"):
        ChannelMask(ChannelGroups(6), "spare")(model, x, torch.ones(2, 6, dtype=torch.bool))
