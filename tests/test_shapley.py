"""Shapley engine: exact values against analytic answers and brute force; KernelSHAP against exact values."""

import itertools
import math

import pytest
import torch
from torch import nn

from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups, PatchGrid
from lit_xai.shapley import (
    ModelGame,
    exact_shapley,
    kernel_shap,
    shapley_values,
    shapley_weights,
)


def table_game(table: torch.Tensor, num_players: int):
    """A game given by a table over coalitions: ``(2^d, C)`` or ``(B, 2^d, C)``; bit i of the row = player i."""
    bits = 1 << torch.arange(num_players)

    def game(keep):
        codes = (keep.long() * bits).sum(1)
        return table[..., codes, :]

    return game


def brute_force_shapley(game, num_players: int) -> torch.Tensor:
    """Average marginal contribution over all d! orderings of the players."""
    total = 0.0
    for order in itertools.permutations(range(num_players)):
        keep = torch.zeros(num_players + 1, num_players, dtype=torch.bool)
        for step, player in enumerate(order, start=1):
            keep[step:, player] = True
        values = game(keep)  # (..., d + 1, C): coalitions along the ordering
        gains = values[..., 1:, :] - values[..., :-1, :]
        total = total + gains[..., torch.argsort(torch.tensor(order)), :]
    return total / math.factorial(num_players)


def mlp_game(num_features: int, num_inputs: int, seed: int = 0, link: str = "softmax") -> ModelGame:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(num_features, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    x = 1.5 * torch.randn(num_inputs, num_features)
    return ModelGame(model, BaselineFill(FeatureGroups(num_features)), x, link=link)


# ---------------------------------------------------------------------------------------------------------------
# Exact Shapley values
# ---------------------------------------------------------------------------------------------------------------


def test_shapley_weights_sum_to_one_over_subsets():
    for d in (1, 2, 7, 20):
        w = shapley_weights(d)
        counts = torch.tensor([math.comb(d - 1, s) for s in range(d)], dtype=torch.float64)
        assert torch.allclose((counts * w).sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)


def test_linear_model_tabular_groups():
    groups = [[0, 4], [1], [2, 3, 5], [6]]
    players = FeatureGroups(7, groups)
    model = nn.Linear(7, 3).double().eval()
    baseline = torch.randn(7, dtype=torch.float64)
    x = torch.randn(5, 7, dtype=torch.float64)
    game = ModelGame(model, BaselineFill(players, fill=baseline), x, link="logits")
    phi = exact_shapley(game, players.num_players)
    per_feature = (x - baseline).unsqueeze(-1) * model.weight.T  # (B, F, C): w_c,f (x_f - baseline_f)
    expected = torch.stack([per_feature[:, g].sum(1) for g in groups], dim=1)
    assert phi.shape == (5, 4, 3)
    torch.testing.assert_close(phi, expected.detach(), atol=1e-10, rtol=0)


def test_linear_model_image_patches():
    grid = PatchGrid(8, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).double().eval()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    game = ModelGame(model, BaselineFill(grid, fill=0.5), x, link="logits")
    phi = exact_shapley(game, grid.num_players)
    weight = model[1].weight.detach().view(3, 2, 8, 8)
    expected = torch.stack([grid.pool(weight[c] * (x - 0.5)) for c in range(3)], dim=-1)
    torch.testing.assert_close(phi, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("batched", [False, True])
def test_matches_brute_force_permutations(batched):
    d = 5
    table = torch.randn(*((2,) if batched else ()), 2**d, 3, dtype=torch.float64)
    game = table_game(table, d)
    expected = brute_force_shapley(game, d)
    for batch_size in (7, 4096):  # coalitions split over several calls or all in one
        torch.testing.assert_close(
            exact_shapley(game, d, batch_size=batch_size), expected, atol=1e-12, rtol=0
        )


def test_efficiency_symmetry_dummy_on_random_table():
    d = 6
    codes = torch.arange(2**d)
    swap_1_4 = codes & ~0b10010 | ((codes >> 1) & 1) << 4 | ((codes >> 4) & 1) << 1
    base = torch.randn(2**d, 2, dtype=torch.float64)
    table = 0.5 * (base + base[swap_1_4])  # players 1 and 4 are interchangeable
    table = table[codes & ~0b100]  # player 2 changes nothing
    phi = exact_shapley(table_game(table, d), d)
    torch.testing.assert_close(phi.sum(0), table[-1] - table[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(phi[1], phi[4], atol=1e-12, rtol=0)
    assert phi[2].abs().max() < 1e-12
    assert (phi[1] - phi[0]).abs().max() > 1e-3  # the other players are not all alike


def test_model_game_batched_equals_one_at_a_time_and_is_efficient():
    game = mlp_game(num_features=6, num_inputs=4)
    phi = exact_shapley(game, 6)
    torch.testing.assert_close(phi.sum(1), game.grand() - game.null(), atol=1e-5, rtol=0)
    for i in range(4):
        single = ModelGame(game.model, game.masker, game.x[i : i + 1], link="softmax")
        torch.testing.assert_close(exact_shapley(single, 6), phi[i : i + 1], atol=1e-6, rtol=0)


def test_model_game_target_selects_a_class_per_input():
    game = mlp_game(num_features=5, num_inputs=3)
    target = torch.tensor([2, 0, 1])
    picked = ModelGame(game.model, game.masker, game.x, target=target)
    keep = torch.rand(9, 5) > 0.5
    full, out = game(keep), picked(keep)
    assert out.shape == (3, 9, 1)
    torch.testing.assert_close(out[..., 0], full[torch.arange(3), :, target])


# ---------------------------------------------------------------------------------------------------------------
# KernelSHAP
# ---------------------------------------------------------------------------------------------------------------


def test_kernel_shap_converges_to_exact_values():
    d, threshold = 10, 0.01
    game = mlp_game(num_features=d, num_inputs=3, seed=1)
    exact = exact_shapley(game, d)
    result = kernel_shap(
        game, d, threshold=threshold, return_trajectory=True, generator=torch.Generator().manual_seed(0)
    )
    assert result.converged and bool((result.ratio < threshold).all())
    assert result.num_evaluations < 100_000
    error = (result.values - exact).abs()
    spread = exact.amax(1, keepdim=True) - exact.amin(1, keepdim=True)
    # A std of 1% of the range allows errors of a few std over 30 values per image: 3% of the range.
    assert (error / spread).max() < 3 * threshold
    assert (error <= 4 * result.std + 1e-6).all()  # the reported std is honest
    # Efficiency holds exactly at every step, not just in the limit.
    target = game.grand() - game.null()
    evaluations = [n for n, _ in result.trajectory]
    assert evaluations == sorted(evaluations) and evaluations[-1] == result.num_evaluations
    for _, values in result.trajectory:
        torch.testing.assert_close(values.sum(1), target, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.trajectory[-1][1], result.values)


def test_kernel_shap_unpaired_converges():
    d, threshold = 8, 0.02
    game = mlp_game(num_features=d, num_inputs=2, seed=2)
    exact = exact_shapley(game, d)
    result = kernel_shap(
        game, d, paired=False, threshold=threshold, generator=torch.Generator().manual_seed(0)
    )
    spread = exact.amax(1, keepdim=True) - exact.amin(1, keepdim=True)
    assert result.converged
    assert ((result.values - exact).abs() / spread).max() < 3 * threshold


def test_kernel_shap_is_deterministic_for_a_seeded_generator():
    game = mlp_game(num_features=9, num_inputs=2)
    runs = [
        kernel_shap(game, 9, threshold=0.02, generator=torch.Generator().manual_seed(7)) for _ in range(2)
    ]
    assert runs[0].num_evaluations == runs[1].num_evaluations
    assert torch.equal(runs[0].values, runs[1].values) and torch.equal(runs[0].std, runs[1].std)


def test_kernel_shap_batched_equals_one_at_a_time():
    d = 9
    game = mlp_game(num_features=d, num_inputs=3)
    kwargs = dict(threshold=None, max_evaluations=2 + 4 * 256, batch_size=256, return_trajectory=True)
    batched = kernel_shap(game, d, generator=torch.Generator().manual_seed(3), **kwargs)
    for i in range(3):
        single_game = ModelGame(game.model, game.masker, game.x[i : i + 1])
        single = kernel_shap(single_game, d, generator=torch.Generator().manual_seed(3), **kwargs)
        assert [n for n, _ in single.trajectory] == [n for n, _ in batched.trajectory]
        for (_, one), (_, many) in zip(single.trajectory, batched.trajectory):
            torch.testing.assert_close(one[0], many[i], atol=1e-6, rtol=0)


def test_kernel_shap_on_an_unbatched_game_and_the_cap():
    d = 7
    table = torch.randn(2**d, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="max_evaluations"):
        result = kernel_shap(table_game(table, d), d, threshold=1e-6, max_evaluations=1000, batch_size=512)
    assert result.values.shape == (d, 2) and result.values.dtype == torch.float64
    assert result.num_evaluations == 1000 and not result.converged
    assert result.ratio.shape == ()
    torch.testing.assert_close(result.values.sum(0), table[-1] - table[0], atol=1e-10, rtol=0)


def test_kernel_shap_std_is_nan_until_enough_samples():
    d = 6
    game = table_game(torch.randn(2**d, 1, dtype=torch.float64), d)
    # 16 pairs identify 6 players, but a std needs 32 batch means and 4 d samples.
    result = kernel_shap(game, d, threshold=None, max_evaluations=2 + 32, batch_size=32)
    assert result.std.isnan().all() and torch.isinf(result.ratio) and not result.converged
    result = kernel_shap(game, d, threshold=None, max_evaluations=2 + 64, batch_size=64)
    assert result.std.isfinite().all() and torch.isfinite(result.ratio)


def test_kernel_shap_stops_at_once_where_it_is_exact():
    # Paired KernelSHAP is exact for games of order <= 2 (additive plus pairwise terms): once the players are
    # identified the std is zero, so 196 players stop at the first std (4 d pairs), far below the cap.
    d = 196
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d, dtype=torch.float64, generator=gen)
    q = torch.randn(d, d, dtype=torch.float64, generator=gen) / d
    result = kernel_shap(
        lambda keep: (keep.double() @ w + ((keep.double() @ q) * keep.double()).sum(1)).unsqueeze(-1),
        d,
        batch_size=2048,
        max_evaluations=10_000,
        generator=torch.Generator().manual_seed(1),
    )
    exact = w + q.diagonal() + (q + q.T).sum(1) / 2 - q.diagonal()
    assert result.converged and result.num_evaluations == 2 + 2048
    torch.testing.assert_close(result.values[:, 0], exact, atol=1e-9, rtol=0)


def test_kernel_shap_std_is_calibrated_and_the_threshold_holds():
    # Over repeated runs stopped by the rule, errors against exact values divided by the reported std behave like
    # standard normals (RMS near 1), and the realised error is the threshold's size: the threshold means what it says.
    d, threshold = 12, 0.02
    game = mlp_game(num_features=d, num_inputs=3, seed=1)
    exact = exact_shapley(game, d)
    spread = exact.amax(1) - exact.amin(1)
    z, realised = [], []
    for seed in range(10):
        result = kernel_shap(
            game, d, threshold=threshold, batch_size=64, generator=torch.Generator().manual_seed(seed)
        )
        assert result.converged
        z.append(((result.values - exact) / result.std).flatten())
        realised.append(((result.values - exact).abs().amax(1) / spread).amax(-1))
    z = torch.cat(z)
    assert 0.7 < float(z.pow(2).mean().sqrt()) < 1.4
    assert float((z.abs() > 3).float().mean()) < 0.03
    # The worst of an input's 36 errors (12 players, 3 classes), relative to its range, is the threshold's size: the threshold bounds the
    # largest std, so the worst error is a few of the (mostly smaller) stds.
    realised = torch.stack(realised)
    assert threshold / 2 < float(realised.median()) < 2 * threshold
    assert float(realised.max()) < 4 * threshold


def test_kernel_shap_inputs_stop_on_their_own_and_alone_equals_batched():
    d = 9
    game = mlp_game(num_features=d, num_inputs=3, seed=4)
    batched = kernel_shap(game, d, threshold=0.01, batch_size=64, generator=torch.Generator().manual_seed(5))
    assert batched.converged and batched.evaluations.shape == (3,)
    assert batched.num_evaluations == int(batched.evaluations.max())
    assert len(set(batched.evaluations.tolist())) > 1  # not every input needs the same budget
    for i in range(3):
        single_game = ModelGame(game.model, game.masker, game.x[i : i + 1])
        single = kernel_shap(
            single_game, d, threshold=0.01, batch_size=64, generator=torch.Generator().manual_seed(5)
        )
        assert int(single.evaluations[0]) == int(batched.evaluations[i])
        torch.testing.assert_close(single.values[0], batched.values[i], atol=1e-6, rtol=0)


def test_kernel_shap_stops_evaluating_inputs_that_converged():
    d = 9
    game = mlp_game(num_features=d, num_inputs=3, seed=4)
    evaluated = []

    class Counting(ModelGame):
        def __call__(self, keep):
            evaluated.append(self.x.shape[0] * keep.shape[0])
            return super().__call__(keep)

    counting = Counting(game.model, game.masker, game.x)
    result = kernel_shap(
        counting, d, threshold=0.01, batch_size=64, generator=torch.Generator().manual_seed(5)
    )
    assert sum(evaluated) == int(result.evaluations.sum())


def test_kernel_shap_constant_game_converges_to_zero():
    d = 5
    game = table_game(torch.full((2**d, 2), 3.0, dtype=torch.float64), d)
    result = kernel_shap(game, d, batch_size=128)
    assert result.converged and result.values.abs().max() < 1e-12


def test_single_player_gets_everything():
    game = table_game(torch.tensor([[1.0], [4.0]]), 1)
    torch.testing.assert_close(exact_shapley(game, 1), torch.tensor([[3.0]]))
    result = kernel_shap(game, 1)
    torch.testing.assert_close(result.values, torch.tensor([[3.0]]))
    assert result.converged and result.num_evaluations == 2


def test_shapley_values_helper_agrees_between_methods():
    game = mlp_game(num_features=6, num_inputs=2)
    exact = shapley_values(game.model, game.masker, game.x, method="exact")
    approx = shapley_values(
        game.model,
        game.masker,
        game.x,
        method="kernel",
        threshold=0.005,
        generator=torch.Generator().manual_seed(0),
    )
    assert exact.shape == approx.shape == (2, 6, 3)
    assert (exact - approx).abs().max() < 0.03 * (exact.amax(1) - exact.amin(1)).max()


# ---------------------------------------------------------------------------------------------------------------
# Leverage SHAP (Musco & Witter, ICLR 2025): kernel_shap(sampler="leverage")
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paired", [True, False])
def test_leverage_shap_is_exact_on_additive_and_linear_games(paired):
    d = 12
    w = torch.randn(d, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = kernel_shap(
        lambda keep: keep.double() @ w,
        d,
        sampler="leverage",
        paired=paired,
        threshold=None,
        max_evaluations=2 + 96,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(result.values, w, atol=1e-9, rtol=0)
    model = nn.Linear(d, 3).double().eval()
    x = torch.randn(4, d, dtype=torch.float64)
    game = ModelGame(model, BaselineFill(FeatureGroups(d), fill=0.25), x, link="logits")
    result = kernel_shap(
        game, d, sampler="leverage", threshold=None, max_evaluations=2 + 64, paired=paired, batch_size=32
    )
    expected = (x - 0.25).unsqueeze(-1) * model.weight.detach().T
    torch.testing.assert_close(result.values, expected, atol=1e-9, rtol=0)


def test_leverage_shap_enumerating_every_coalition_is_exact_and_says_so():
    d = 7
    table = torch.randn(2, 2**d, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    game = table_game(table, d)
    result = kernel_shap(game, d, sampler="leverage", threshold=None, max_evaluations=10_000, batch_size=32)
    torch.testing.assert_close(result.values, exact_shapley(game, d), atol=1e-10, rtol=0)
    assert result.num_evaluations == 2**d and result.converged and (result.std == 0).all()


def test_leverage_shap_error_at_most_kernel_shaps_at_equal_budget():
    # The paper's claim on a small nonlinear game: lower error than (paired) KernelSHAP at every budget.
    d = 10
    game = mlp_game(num_features=d, num_inputs=3, seed=1)
    exact = exact_shapley(game, d)
    for budget in (64, 256, 1000):
        errors = {}
        for sampler in ("kernel", "leverage"):
            runs = [
                kernel_shap(
                    game,
                    d,
                    sampler=sampler,
                    threshold=None,
                    max_evaluations=2 + budget,
                    batch_size=64,
                    generator=torch.Generator().manual_seed(seed),
                )
                for seed in range(20)
            ]
            errors[sampler] = torch.stack([(r.values - exact).pow(2).sum(1).mean() for r in runs]).mean()
        assert errors["leverage"] <= errors["kernel"], (budget, errors)


def test_leverage_shap_has_no_stopping_rule_and_reports_no_std():
    d = 8
    game = mlp_game(num_features=d, num_inputs=2, seed=1)
    with pytest.raises(ValueError, match="threshold=None"):
        kernel_shap(game, d, sampler="leverage")
    result = kernel_shap(game, d, sampler="leverage", threshold=None, max_evaluations=100, batch_size=32)
    assert result.std.isnan().all() and not result.converged and result.num_evaluations == 100


# ---------------------------------------------------------------------------------------------------------------
# Errors a user can cause
# ---------------------------------------------------------------------------------------------------------------


def test_clear_errors():
    never = table_game(torch.zeros(2, 1), 1)
    with pytest.raises(ValueError, match="kernel_shap"):
        exact_shapley(never, 21)
    with pytest.raises(ValueError, match="threshold"):
        kernel_shap(never, 4, threshold=0)
    with pytest.raises(ValueError, match="even"):
        kernel_shap(never, 4, batch_size=7)
    with pytest.raises(ValueError, match="min_evaluations"):
        kernel_shap(never, 4, min_evaluations=10, max_evaluations=5)
    with pytest.raises(ValueError, match="leverage"):
        kernel_shap(never, 4, sampler="uniform")
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        exact_shapley(lambda keep: keep.sum(1).double(), 3)
    with pytest.raises(ValueError, match="NaN"):
        kernel_shap(lambda keep: torch.full((keep.shape[0], 1), float("nan")), 3)
    calls = iter([torch.zeros(1, 1, 1), torch.zeros(2, 1, 1)])
    with pytest.raises(ValueError, match="earlier call"):
        exact_shapley(lambda keep: next(calls), 1, batch_size=1)
    game = mlp_game(num_features=4, num_inputs=2)
    with pytest.raises(ValueError, match="link"):
        ModelGame(game.model, game.masker, game.x, link="probit")
    with pytest.raises(ValueError, match="target"):
        ModelGame(game.model, game.masker, game.x, target=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="tabular input"):
        ModelGame(game.model, game.masker, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="method"):
        shapley_values(game.model, game.masker, game.x, method="sampling")
    with pytest.warns(UserWarning, match="training mode"):
        ModelGame(game.model.train(), game.masker, game.x)
