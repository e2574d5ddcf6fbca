"""Players map keep-masks and attributions between players and the input's layout."""

import pytest
import torch

from lit_xai.players import FeatureGroups, PatchGrid, check_keep


def test_patch_grid_round_trip_on_non_square_grid():
    grid = PatchGrid((6, 8), (3, 2))
    assert grid.grid_size == (2, 4) and grid.num_players == 8
    values = torch.arange(16.0).reshape(2, 8)
    pixels = grid.upsample(values)
    assert pixels.shape == (2, 6, 8)
    assert pixels[0, 3, 2] == values[0, 5]  # row 1 (pixels 3-5), column 1 (pixels 2-3)
    assert torch.equal(grid.pool(pixels, reduce="mean"), values)
    assert torch.equal(grid.pool(pixels), values * 6)


def test_patch_grid_masks_and_class_maps():
    grid = PatchGrid(4, 2)
    keep = torch.tensor([[True, False, False, True]])
    mask = grid.expand_mask(keep)
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    per_class = torch.randn(3, 4, 5)
    assert grid.upsample(per_class).shape == (3, 5, 4, 4)
    assert torch.equal(grid.upsample(per_class)[:, 2], grid.upsample(per_class[..., 2]))


def test_pool_sums_image_channels():
    grid = PatchGrid(4, 2)
    pixels = torch.ones(1, 3, 4, 4)
    assert grid.pool(pixels).tolist() == [[12.0] * 4]


def test_feature_groups():
    groups = FeatureGroups(5, [[0, 3], [1], [2, 4]])
    keep = torch.tensor([[True, False, True]])
    assert groups.expand_mask(keep).tolist() == [[1, 0, 1, 1, 1]]
    assert groups.upsample(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [[1, 2, 3, 1, 3]]
    assert groups.pool(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])).tolist() == [[5, 2, 8]]
    assert FeatureGroups(3).num_players == 3


def test_bad_players_are_explained():
    with pytest.raises(ValueError, match=r"patch_size \(3, 3\) does not divide image_size \(8, 8\)"):
        PatchGrid(8, 3)
    with pytest.raises(ValueError, match="partition"):
        FeatureGroups(4, [[0, 1], [1, 2, 3]])
    with pytest.raises(ValueError, match=r"keep must have shape \(batch, 4\)"):
        PatchGrid(4, 2).expand_mask(torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attributions must have shape"):
        PatchGrid(4, 2).upsample(torch.ones(1, 3))


@pytest.mark.parametrize(
    "keep, shown",
    [
        (torch.tensor([[1, 0, 2, 1]]), "2"),
        (torch.tensor([[1, -1, 0, 1]], dtype=torch.int8), "-1"),
        (torch.tensor([[1.0, 0.5, 0.0, 1.0]]), "0.5"),
        (torch.tensor([[1.0, float("nan"), 0.0, 1.0]]), "nan"),
    ],
)
def test_keep_masks_other_than_zero_and_one_are_refused_whatever_the_dtype(keep, shown):
    # bool() would read 2, -1, 0.5 and NaN all as "keep this player".
    with pytest.raises(
        ValueError, match=rf"keep must be boolean \(or 0/1 valued\); got 1 other value\(s\), e\.g\. {shown}"
    ):
        check_keep(keep, 4)


def test_zero_one_keep_masks_of_any_dtype_are_read_as_booleans():
    expected = torch.tensor([[True, False, False, True]])
    for dtype in (torch.bool, torch.uint8, torch.int64, torch.float16, torch.float64):
        assert torch.equal(check_keep(expected.to(dtype), 4), expected)


# ------------------------------------------------------------------------------------ the players of a model


def assert_grid(players, expected: PatchGrid) -> None:
    assert isinstance(players, PatchGrid)
    assert (players.image_size, players.patch_size) == (expected.image_size, expected.patch_size)


def test_players_for_reads_the_kind_of_data_from_the_input_or_the_sizes():
    from lit_xai.players import players_for

    assert_grid(players_for(torch.zeros(2, 3, 8, 6)), PatchGrid((8, 6), 1))  # pixels by default
    assert players_for(torch.zeros(2, 3, 8, 6), patch_size=2).grid_size == (4, 3)
    assert players_for(image_size=8, patch_size=4).num_players == 4
    tabular = players_for(torch.zeros(2, 5), groups=[[0, 1], [2], [3, 4]])
    assert isinstance(tabular, FeatureGroups) and tabular.num_players == 3
    assert players_for(num_features=4).num_players == 4
    size_rule = players_for(torch.zeros(1, 1, 12, 20), default_patch_size=lambda hw: (hw[0] // 3, hw[1] // 5))
    assert size_rule.grid_size == (3, 5)
    for kwargs, message in [
        (dict(x=torch.zeros(2, 3, 4)), "images .* or tabular rows"),
        (dict(image_size=8, num_features=3), "exactly one of"),
        (dict(image_size=8, groups=[[0]]), "groups apply to tabular"),
        (dict(image_size=8, default_patch_size=None), "cannot tell the players"),
        (dict(), "cannot tell the players"),
    ]:
        with pytest.raises(ValueError, match=message):
            players_for(**kwargs)


def test_players_for_a_vit_are_its_patches_unless_told_otherwise():
    import timm
    from torch import nn

    from lit_xai.players import is_vit, players_for

    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=3,
        img_size=16,
        patch_size=4,
        depth=1,
        embed_dim=16,
        num_heads=2,
    )
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    assert is_vit(vit) and not is_vit(cnn)
    assert_grid(
        players_for(model=vit, default_patch_size=None), PatchGrid(16, 4)
    )  # sizes from the ViT itself
    assert_grid(players_for(torch.zeros(1, 3, 16, 16), vit, patch_size=8), PatchGrid(16, 8))
    assert_grid(players_for(torch.zeros(1, 1, 16, 16), cnn), PatchGrid(16, 1))  # a CNN gets the default
    with pytest.raises(ValueError, match="cannot tell the players of a Sequential"):
        players_for(model=cnn, image_size=16, default_patch_size=None)
