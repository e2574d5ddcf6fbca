"""Maskers: token dropping equals attention masking, and baseline filling reaches its end points."""

import math

import pytest
import timm
import torch
from torch import nn

from lit_xai.masking import AppendMask, AttentionMask, BaselineFill, TokenDrop, build_masker, gaussian_blur
from lit_xai.players import FeatureGroups, PatchGrid
from lit_xai.sampling import ShapleySampler

VIT_VARIANTS = {
    "cls": dict(),
    "registers": dict(reg_tokens=4, no_embed_class=True),
    "no_embed_class": dict(no_embed_class=True),
    "avg_pool_cls": dict(global_pool="avg"),
    "avg_pool_no_prefix": dict(class_token=False, global_pool="avg"),
}


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=5,
        img_size=16,
        patch_size=4,
        in_chans=3,
        embed_dim=32,
        depth=2,
        num_heads=2,
        **kwargs,
    )
    return model.eval()


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
def test_token_drop_matches_attention_mask(variant):
    model = tiny_vit(**VIT_VARIANTS[variant])
    grid = PatchGrid(16, 4)
    x = torch.randn(12, 3, 16, 16)
    keep = ShapleySampler(grid.num_players).sample(12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dropped = TokenDrop(grid, num_buckets=3)(model, x, keep)
        masked = AttentionMask(grid)(model, x, keep)
        full = model(x)
        all_kept = torch.ones(12, grid.num_players, dtype=torch.bool)
        dropped_full = TokenDrop(grid)(model, x, all_kept)
        masked_full = AttentionMask(grid)(model, x, all_kept)
    assert (dropped - masked).abs().max() <= 1e-4
    assert (dropped_full - full).abs().max() <= 1e-4
    assert (masked_full - full).abs().max() <= 1e-4


def test_token_drop_equals_model_on_cropped_sequence():
    """Dropping tokens is the same as running the ViT on only the kept tokens, one image at a time."""
    model = tiny_vit()
    grid = PatchGrid(16, 4)
    x = torch.randn(3, 3, 16, 16)
    keep = torch.zeros(3, 16, dtype=torch.bool)
    keep[0, [0, 5]] = True
    keep[1, :] = True
    with torch.no_grad():
        out = TokenDrop(grid)(model, x, keep)
        tokens = model._pos_embed(model.patch_embed(x))
        for i in range(3):
            seq = torch.cat([tokens[i : i + 1, :1], tokens[i : i + 1, 1:][:, keep[i]]], dim=1)
            ref = model.forward_head(model.norm(model.blocks(seq)))
            assert torch.allclose(out[i], ref[0], atol=1e-5)


def test_coarse_players_on_vit_tokens():
    model = tiny_vit()
    coarse = PatchGrid(16, 8)  # 2x2 players, each 2x2 tokens
    keep = torch.tensor([[True, False, False, True]])
    x = torch.randn(1, 3, 16, 16)
    fine_keep = coarse.token_keep(keep, (4, 4))
    with torch.no_grad():
        a = TokenDrop(coarse)(model, x, keep)
        b = TokenDrop(PatchGrid(16, 4))(model, x, fine_keep)
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="whole number of tokens"):
        TokenDrop(PatchGrid(16, 2))(model, x, torch.ones(1, 64, dtype=torch.bool))


def test_empty_coalition_without_prefix_token_is_refused():
    model = tiny_vit(**VIT_VARIANTS["avg_pool_no_prefix"])
    with pytest.raises(ValueError, match="no prefix"):
        TokenDrop(PatchGrid(16, 4))(model, torch.randn(1, 3, 16, 16), torch.zeros(1, 16, dtype=torch.bool))


def test_vit_maskers_refuse_other_models():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="BaselineFill"):
        TokenDrop(PatchGrid(16, 4))(cnn, torch.randn(1, 3, 16, 16), torch.ones(1, 16, dtype=torch.bool))


@pytest.mark.parametrize("fill", ["zeros", "mean", "blur", "noise", 0.5])
def test_baseline_fill_end_points(fill):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    grid = PatchGrid(16, 4)
    masker = BaselineFill(grid, fill=fill, mean=[0.1, 0.2, 0.3], generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 16, 16)
    ones = torch.ones(2, 16, dtype=torch.bool)
    assert torch.allclose(masker(model, x, ones), model(x))
    masker.generator = torch.Generator().manual_seed(3)
    baseline = masker.baseline(x).expand_as(x)
    masker.generator = torch.Generator().manual_seed(3)
    assert torch.allclose(masker(model, x, ~ones), model(baseline), atol=1e-6)


def test_baseline_fill_keeps_exactly_the_kept_patches():
    grid = PatchGrid((8, 12), (4, 4))
    x = torch.randn(1, 1, 8, 12)
    keep = torch.tensor([[True, False, False, False, False, True]])
    masked = BaselineFill(grid, fill=7.0).mask_input(x, keep)
    assert torch.equal(masked[0, 0, :4, :4], x[0, 0, :4, :4])
    assert torch.equal(masked[0, 0, 4:, 8:], x[0, 0, 4:, 8:])
    assert (masked[0, 0, :4, 4:] == 7).all() and (masked[0, 0, 4:, :8] == 7).all()


def test_append_mask_layouts():
    grid = PatchGrid(8, 2)
    x = torch.randn(2, 1, 8, 8)
    keep = torch.rand(2, 16) > 0.5
    masked = AppendMask(grid).mask_input(x, keep)
    assert masked.shape == (2, 2, 8, 8)
    assert torch.equal(masked[:, 1:], grid.expand_mask(keep))
    groups = FeatureGroups(6, [[0, 1], [2], [3, 4, 5]])
    tab = AppendMask(groups).mask_input(
        torch.ones(2, 6), torch.tensor([[True, False, True], [False, False, False]])
    )
    assert tab.tolist() == [[1, 1, 0, 1, 1, 1, 1, 0, 1], [0] * 9]
    assert AppendMask(groups).extra_inputs() == 3 and AppendMask(grid).extra_inputs() == 1


def test_bad_masker_input_is_explained():
    grid = PatchGrid(16, 4)
    model = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"keep must have shape \(batch, 16\)"):
        TokenDrop(grid)(model, x, torch.ones(2, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 rows but the input batch has"):
        TokenDrop(grid)(model, torch.randn(3, 3, 16, 16), torch.ones(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected images of shape"):
        TokenDrop(grid)(model, torch.randn(2, 3, 32, 32), torch.ones(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown fill 'median'"):
        BaselineFill(grid, fill="median")
    with pytest.raises(ValueError, match="needs the mean"):
        BaselineFill(grid, fill="mean")
    with pytest.raises(ValueError, match="unknown masker 'dropout'"):
        build_masker("dropout", grid)


def padded_cost(groups, counts, prefix):
    return sum(len(rows) * (int(counts[rows].max()) + prefix) for rows in groups)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_buckets", [1, 2, 3, 5])
def test_token_buckets_are_an_optimal_partition(seed, num_buckets):
    """The dynamic programme finds the cheapest contiguous grouping, checked against every possible grouping."""
    import itertools

    from lit_xai.vit_tokens import bucket_rows

    counts = torch.randint(0, 12, (20,), generator=torch.Generator().manual_seed(seed))
    groups = bucket_rows(counts, num_buckets, prefix=1)
    assert sorted(torch.cat(groups).tolist()) == list(range(20))
    assert len(groups) <= num_buckets
    lengths = sorted(set(counts.tolist()))
    best = float("inf")
    for k in range(min(num_buckets, len(lengths))):
        for cuts in itertools.combinations(lengths[:-1], k):
            bounds = [-1, *cuts, lengths[-1]]
            cost = sum(
                int(((counts > lo) & (counts <= hi)).sum()) * (hi + 1)
                for lo, hi in zip(bounds[:-1], bounds[1:])
            )
            best = min(best, cost)
    assert padded_cost(groups, counts, prefix=1) == best


@pytest.mark.parametrize(("sigma", "radius"), [(1.0, None), (1.5, None), (0.7, 1), (1.0, 2), (4.0, None)])
def test_gaussian_blur_matches_scipy(sigma, radius):
    """The one Gaussian blur (baseline fill, IBA smoothing) equals SciPy's ``gaussian_filter`` with edge replication
    ("nearest") and the same number of taps (SciPy keeps ``int(truncate * sigma + 0.5)`` on each side)."""
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    taps = max(1, math.ceil(3 * sigma)) if radius is None else radius
    expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=taps / sigma)
    torch.testing.assert_close(gaussian_blur(x, sigma, radius), torch.from_numpy(expected))
    assert gaussian_blur(x, 0.0) is x
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, -1.0)
