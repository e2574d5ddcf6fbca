"""Samplers draw subset sizes from their stated distributions and uniform subsets of each size."""

import math

import pytest
import torch
from scipy import stats

from lit_xai.sampling import LeverageSampler, ShapleySampler, UniformSizeSampler, shapley_size_probabilities


def chi_square_pvalue(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * observed.sum()
    return float(stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("sampler_cls", [UniformSizeSampler, ShapleySampler])
@pytest.mark.parametrize("paired", [False, True])
def test_subset_sizes_follow_the_distribution(sampler_cls, paired):
    d, n = 12, 40_000
    sampler = sampler_cls(d, paired=paired)
    keep = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (n, d) and keep.dtype == torch.bool
    sizes = torch.bincount(keep.sum(1), minlength=d + 1).double()
    probs = sampler.size_probabilities()
    support = probs > 0
    assert sizes[~support].sum() == 0
    if paired:  # sizes of a pair are k and d - k: the size distribution is the symmetrised one
        probs = 0.5 * (probs + probs.flip(0))
    assert chi_square_pvalue(sizes[support], probs[support]) > 0.001


def test_players_are_uniform_given_the_size():
    d = 8
    keep = ShapleySampler(d).sample(40_000, generator=torch.Generator().manual_seed(1))
    for k in (1, 3, 7):
        rows = keep[keep.sum(1) == k]
        counts = rows.sum(0).double()
        assert chi_square_pvalue(counts, torch.full((d,), 1.0 / d, dtype=torch.float64)) > 0.001


def test_paired_rows_are_complements():
    keep = UniformSizeSampler(10, paired=True).sample(64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(keep[1::2], ~keep[0::2])


def test_shapley_kernel_weights():
    d = 6
    probs = shapley_size_probabilities(d)
    k = torch.arange(1, d, dtype=torch.float64)
    ratio = probs * k * (d - k)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio)) and torch.isclose(
        probs.sum(), torch.tensor(1.0).double()
    )


def test_seeded_sampling_is_reproducible():
    a = ShapleySampler(20).sample(16, generator=torch.Generator().manual_seed(5))
    b = ShapleySampler(20).sample(16, generator=torch.Generator().manual_seed(5))
    c = ShapleySampler(20).sample(16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="at least 2 players"):
        ShapleySampler(1)
    with pytest.raises(ValueError, match="must be even"):
        ShapleySampler(4, paired=True).sample(3)


# ---------------------------------------------------------------------------------------------------------------
# Leverage SHAP's plan (Musco & Witter, ICLR 2025)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("d", [9, 10])
def test_leverage_plan_sizes_uniform_distinct_and_capped(d, paired):
    sampler = LeverageSampler(d, paired=paired)
    keep, weight = sampler.sample(300, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (300, d) and weight.shape == (300,) and keep.dtype == torch.bool
    codes = (keep.long() << torch.arange(d)).sum(1)
    assert len(set(codes.tolist())) == 300  # without replacement
    sizes = keep.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= d - 1
    counts = torch.bincount(sizes, minlength=d + 1)[1:d]
    capacity = torch.tensor([math.comb(d, k) for k in range(1, d)])
    # Every size gets the same count, except sizes with fewer subsets, which are enumerated completely.
    full = counts == capacity
    assert full.sum() >= 2  # sizes 1 and d - 1 (d subsets each) cannot take their share of 300
    assert counts[~full].max() - counts[~full].min() <= (2 if paired else 1)
    assert counts[~full].min() > counts[full].max()
    if paired:
        assert torch.equal(keep[1::2], ~keep[0::2]) and torch.equal(weight[0::2], weight[1::2])


@pytest.mark.parametrize("paired", [True, False])
def test_leverage_weights_give_back_the_shapley_kernel(paired):
    # |S| is constant within a stratum, so any plan's weighted moments of |S| and |S|^2 are the kernel's exactly.
    d = 11
    probs = shapley_size_probabilities(d)
    k = torch.arange(1, d, dtype=torch.float64)
    for rows in (40, 400, 2046):
        keep, weight = LeverageSampler(d, paired=paired).sample(
            rows, generator=torch.Generator().manual_seed(1)
        )
        size = keep.sum(1).double()
        torch.testing.assert_close((weight * size).mean(), (probs * k).sum())
        torch.testing.assert_close((weight * size**2).mean(), (probs * k**2).sum())
    # The complete plan is every coalition once, and its weighted moments are the kernel's E[z z^T].
    keep, weight = LeverageSampler(d, paired=paired).sample(2**d - 2)
    codes = (keep.long() << torch.arange(d)).sum(1)
    assert sorted(codes.tolist()) == list(range(1, 2**d - 1))
    z = keep.double()
    moments = (z * weight.unsqueeze(1)).T @ z / len(z)
    off_diagonal = (probs * k * (k - 1) / (d * (d - 1))).sum()
    expected = torch.full((d, d), float(off_diagonal), dtype=torch.float64)
    expected.fill_diagonal_(float((probs * k / d).sum()))
    torch.testing.assert_close(moments, expected)


def test_leverage_plan_draws_large_strata_without_repeats():
    d = 40  # C(40, k) is far beyond any budget here: subsets are drawn and repeats rejected
    keep, _ = LeverageSampler(d).sample(4000, generator=torch.Generator().manual_seed(2))
    rows = {tuple(row) for row in keep.int().tolist()}
    assert len(rows) == 4000
    a, _ = LeverageSampler(d).sample(100, generator=torch.Generator().manual_seed(3))
    b, _ = LeverageSampler(d).sample(100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_bad_leverage_arguments():
    with pytest.raises(ValueError, match="at least 2 players"):
        LeverageSampler(1)
    with pytest.raises(ValueError, match="even"):
        LeverageSampler(5).sample(7)
