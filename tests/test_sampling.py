"""Samplers draw subset sizes from their stated distributions and uniform subsets of each size."""

import pytest
import torch
from scipy import stats

from lit_xai.sampling import ShapleySampler, UniformSizeSampler, shapley_size_probabilities


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
