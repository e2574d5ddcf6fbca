"""Semivalues: size weights against the papers' formulas, exact enumeration against brute force, permutation sampling
and Banzhaf MSR against analytic answers and exact values."""

import itertools
import math

import pytest
import torch
from scipy import special
from test_shapley import mlp_game, table_game
from torch import nn

from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups
from lit_xai.semivalues import (
    banzhaf_msr,
    banzhaf_size_weights,
    beta_size_weights,
    exact_semivalue,
    permutation_sampling,
    sample_permutations,
    shapley_size_weights,
)
from lit_xai.shapley import ModelGame, exact_shapley


def linear_game(d: int = 6, num_inputs: int = 3):
    torch.manual_seed(0)
    model = nn.Linear(d, 2).double().eval()
    x, baseline = torch.randn(num_inputs, d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    game = ModelGame(model, BaselineFill(FeatureGroups(d), fill=baseline), x, link="logits")
    return game, (x - baseline).unsqueeze(-1) * model.weight.detach().T  # w * (x - baseline), (B, d, C)


def brute_force_semivalue(table: torch.Tensor, d: int, size_weights: torch.Tensor) -> torch.Tensor:
    """``Σ_{S ∌ i} q_|S| / C(d-1, |S|) (v(S ∪ i) - v(S))`` coalition by coalition."""
    phi = torch.zeros(d, table.shape[-1], dtype=torch.float64)
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for size in range(d):
            for subset in itertools.combinations(others, size):
                code = sum(1 << j for j in subset)
                gain = table[code | (1 << i)] - table[code]
                phi[i] += size_weights[size] / math.comb(d - 1, size) * gain
    return phi


def semivalue_weights(d: int) -> dict[str, torch.Tensor]:
    return {
        "shapley": shapley_size_weights(d),
        "banzhaf": banzhaf_size_weights(d),
        "beta(16,1)": beta_size_weights(d, 16, 1),
        "beta(1,4)": beta_size_weights(d, 1, 4),
        "beta(2.5,0.5)": beta_size_weights(d, 2.5, 0.5),
    }


# ---------------------------------------------------------------------------------------------------------------
# Size weights
# ---------------------------------------------------------------------------------------------------------------


def test_size_weights_match_the_papers():
    d = 9
    torch.testing.assert_close(beta_size_weights(d, 1, 1), shapley_size_weights(d))
    s = torch.arange(d, dtype=torch.float64)
    comb = torch.tensor([math.comb(d - 1, k) for k in range(d)], dtype=torch.float64)
    torch.testing.assert_close(banzhaf_size_weights(d), comb / 2 ** (d - 1))
    # WeightedSHAP's code: weight_j ∝ B(j + a, m - j + b - 1) / B(j + 1, m - j) with (a, b) = (1, 16) for the
    # paper's Beta(16, 1): the mass moves to small coalitions.
    for paper, code in (((16, 1), (1, 16)), ((1, 4), (4, 1)), ((2.5, 0.5), (0.5, 2.5))):
        a, b = code
        expected = special.beta(s + a, d - s + b - 1) / special.beta(s + 1, d - s)
        torch.testing.assert_close(beta_size_weights(d, *paper), expected / expected.sum())
    q = beta_size_weights(d, 16, 1)
    assert q[0] > q[d // 2] > q[-1]
    assert banzhaf_size_weights(400).isfinite().all()


# ---------------------------------------------------------------------------------------------------------------
# Exact enumeration
# ---------------------------------------------------------------------------------------------------------------


def test_exact_semivalues_equal_brute_force_and_shapley():
    d = 5
    table = torch.randn(2**d, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    game = table_game(table, d)
    for name, q in semivalue_weights(d).items():
        torch.testing.assert_close(
            exact_semivalue(game, d, q, batch_size=7), brute_force_semivalue(table, d, q), msg=name
        )
    torch.testing.assert_close(exact_semivalue(game, d, shapley_size_weights(d)), exact_shapley(game, d))


def test_banzhaf_of_the_two_player_and_game():
    # v(S) = 1 only when both are present: each player's contributions are 0 (alone) and 1 (with the other).
    table = torch.tensor([[0.0], [0.0], [0.0], [1.0]], dtype=torch.float64)
    game = table_game(table, 2)
    torch.testing.assert_close(
        exact_semivalue(game, 2, banzhaf_size_weights(2)), torch.full((2, 1), 0.5).double()
    )
    every = torch.tensor([[False, False], [True, False], [False, True], [True, True]])
    torch.testing.assert_close(banzhaf_msr(game, 2, 0, masks=every), torch.full((2, 1), 0.5).double())
    # A third player that changes nothing halves nothing: Banzhaf values are not shared out (no efficiency).
    game3 = table_game(table[torch.arange(8) & 0b011], 3)
    torch.testing.assert_close(
        exact_semivalue(game3, 3, banzhaf_size_weights(3)), torch.tensor([[0.5], [0.5], [0.0]]).double()
    )
    estimate = banzhaf_msr(game3, 3, 20_000, generator=torch.Generator().manual_seed(0))
    # Standard error of a difference of two means over ~10,000 draws each of a 0/1 value with p <= 1/2: < 0.01.
    assert (estimate - torch.tensor([[0.5], [0.5], [0.0]]).double()).abs().max() < 0.03


# ---------------------------------------------------------------------------------------------------------------
# Permutation sampling
# ---------------------------------------------------------------------------------------------------------------


def test_every_semivalue_of_a_linear_game_is_w_times_x_minus_baseline():
    d = 6
    game, expected = linear_game(d)
    result = permutation_sampling(game, d, 4, generator=torch.Generator().manual_seed(0))
    assert result.sums.shape == (3, d, d, 2) and result.counts.shape == (d, d)
    for name, q in semivalue_weights(d).items():
        torch.testing.assert_close(result.semivalue(q), expected, atol=1e-12, rtol=0, msg=name)
        torch.testing.assert_close(exact_semivalue(game, d, q), expected, atol=1e-12, rtol=0, msg=name)
    # Every drawn (player, size) cell holds the same marginal contribution; undrawn cells are NaN.
    means = result.means
    drawn = result.counts > 0
    assert (~drawn).any() and means[:, ~drawn].isnan().all()
    torch.testing.assert_close(means[:, drawn], expected.unsqueeze(2).expand_as(means)[:, drawn])
    # Banzhaf by maximum sample reuse is exact on the linear game once it sees every coalition.
    every = torch.arange(2**d).unsqueeze(1) >> torch.arange(d) & 1
    torch.testing.assert_close(banzhaf_msr(game, d, 0, masks=every.bool()), expected, atol=1e-12, rtol=0)


def test_all_permutations_give_the_exact_semivalues():
    d = 4
    table = torch.randn(2, 2**d, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    game = table_game(table, d)
    perms = torch.tensor(list(itertools.permutations(range(d))))
    result = permutation_sampling(game, d, permutations=perms, batch_size=5)
    assert result.num_evaluations == 2 + math.factorial(d) * (d - 1)
    assert (result.counts == math.factorial(d - 1)).all()  # every player at every position (d - 1)! times
    for name, q in semivalue_weights(d).items():
        torch.testing.assert_close(result.semivalue(q), exact_semivalue(game, d, q), msg=name)


def test_sampled_permutations_approach_exact_semivalues_and_shapley_is_efficient():
    d = 6
    game = mlp_game(num_features=d, num_inputs=2, seed=3)
    result = permutation_sampling(
        game, d, max_evaluations=2 + 5 * 4000, generator=torch.Generator().manual_seed(0)
    )
    assert result.num_evaluations == 2 + 5 * 4000 and result.counts.sum() == 4000 * d
    torch.testing.assert_close(result.shapley().sum(1), game.grand() - game.null(), atol=1e-6, rtol=0)
    for name, q in semivalue_weights(d).items():
        exact = exact_semivalue(game, d, q)
        spread = exact.amax(1) - exact.amin(1)
        error = (result.semivalue(q) - exact).abs().amax(1)
        assert (error < 0.05 * spread).all(), (name, error / spread)


def test_antithetic_permutations_are_reversed_pairs():
    perms = sample_permutations(6, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(perms[1::2], perms[0::2].flip(1))
    assert torch.equal(perms.sort(1).values, torch.arange(5).expand(6, 5))


def test_antithetic_pairs_reduce_the_error_of_shapley_values():
    d = 8
    game = mlp_game(num_features=d, num_inputs=3, seed=1)
    exact = exact_shapley(game, d)
    errors = {}
    for antithetic in (False, True):
        runs = [
            permutation_sampling(
                game, d, 20, antithetic=antithetic, generator=torch.Generator().manual_seed(seed)
            ).shapley()
            for seed in range(30)
        ]
        errors[antithetic] = torch.stack([(r - exact).pow(2).sum(1).mean() for r in runs]).mean()
    assert errors[True] < errors[False]


def test_banzhaf_msr_approaches_exact_banzhaf():
    d = 8
    game = mlp_game(num_features=d, num_inputs=2, seed=2)
    exact = exact_semivalue(game, d, banzhaf_size_weights(d))
    estimate = banzhaf_msr(game, d, 40_000, generator=torch.Generator().manual_seed(0))
    spread = exact.amax(1) - exact.amin(1)
    assert ((estimate - exact).abs().amax(1) < 0.05 * spread).all()


def test_clear_errors():
    game = table_game(torch.zeros(2**3, 1), 3)
    with pytest.raises(ValueError, match="size_weights"):
        exact_semivalue(game, 3, torch.ones(3))
    with pytest.raises(ValueError, match="alpha > 0"):
        beta_size_weights(3, 0, 1)
    with pytest.raises(ValueError, match="either"):
        permutation_sampling(game, 3)
    with pytest.raises(ValueError, match="even"):
        permutation_sampling(game, 3, 3)
    with pytest.raises(ValueError, match="pays for no permutation"):
        permutation_sampling(game, 3, max_evaluations=5)
    with pytest.raises(ValueError, match="permutations of 0..2"):
        permutation_sampling(game, 3, permutations=torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="draw more permutations"):
        first = torch.tensor([1.0, 0.0, 0.0])  # all weight on joining the empty coalition: only player 0 did
        permutation_sampling(game, 3, permutations=torch.tensor([[0, 1, 2]])).semivalue(first)
    with pytest.raises(ValueError, match="draw more samples"):
        banzhaf_msr(game, 3, 0, masks=torch.ones(4, 3, dtype=torch.bool))
