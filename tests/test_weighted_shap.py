"""WeightedSHAP: recovery errors against brute force, the choice against the candidates, the Shapley value on ties."""

import itertools

import pytest
import torch
from test_semivalues import linear_game
from test_shapley import mlp_game, table_game

from lit_xai.attribution import WeightedSHAP, build_attribution
from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups
from lit_xai.semivalues import exact_semivalue, permutation_sampling
from lit_xai.weighted_shap import SHAPLEY, default_candidates, recovery_error, weighted_shap


def brute_force_recovery(table: torch.Tensor, phi: torch.Tensor) -> float:
    """``Σ_k |v(top k by |φ|) - v(all)|`` for a one-output table game and one attribution ``(d,)``."""
    d = phi.shape[0]
    order = sorted(range(d), key=lambda i: -abs(float(phi[i])))  # sorted() is stable, like the estimator
    full, error, code = float(table[-1, 0]), 0.0, 0
    for k in range(d + 1):
        error += abs(float(table[code, 0]) - full)
        if k < d:
            code |= 1 << order[k]
    return error


def test_default_candidates_are_the_papers_thirteen():
    candidates = default_candidates(5)
    assert len(candidates) == 13 and list(candidates)[0] == "LOO-first" and list(candidates)[-1] == "LOO-last"
    assert SHAPLEY in candidates and all(
        torch.isclose(q.sum(), q.new_tensor(1.0)) for q in candidates.values()
    )


def test_recovery_error_by_hand():
    # v: {} 0, {0} 1, {1} 3, {0,1} 4; attributions (1, -2) add player 1 first: |0-4| + |3-4| + |4-4| = 5.
    table = torch.tensor([[0.0], [1.0], [3.0], [4.0]], dtype=torch.float64)
    errors, evaluations = recovery_error(table_game(table, 2), torch.tensor([[[[1.0], [-2.0]]]]))
    assert errors.shape == (1, 1, 1) and float(errors) == 5.0 and int(evaluations) == 3


def test_choice_is_the_candidate_that_recovers_best_with_exact_contributions():
    d = 4
    table = torch.randn(2**d, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    game = table_game(table, d)
    perms = torch.tensor(list(itertools.permutations(range(d))))
    result = weighted_shap(game, permutation_sampling(game, d, permutations=perms))
    expected = []
    for name, q in default_candidates(d).items():
        exact = exact_semivalue(game, d, q)
        torch.testing.assert_close(result.candidates[result.names.index(name)], exact, msg=name)
        expected.append(brute_force_recovery(table, exact[:, 0]))
    torch.testing.assert_close(result.errors[:, 0], torch.tensor(expected, dtype=torch.float64))
    best = int(torch.tensor(expected).argmin())
    assert (
        int(result.choice[0]) == best and result.names[best] != SHAPLEY
    )  # this game is one where Shapley loses
    assert expected[best] < expected[result.names.index(SHAPLEY)]
    torch.testing.assert_close(result.values, result.candidates[best])


def test_shapley_wins_ties_and_a_linear_game_is_exact():
    d = 6
    game, expected = linear_game(d)
    result = weighted_shap(
        game, permutation_sampling(game, d, 40, generator=torch.Generator().manual_seed(0))
    )
    # Every candidate is w (x - baseline) (LOO ones too, once every player has been first and last), so all tie.
    assert (result.choice == result.names.index(SHAPLEY)).all()
    torch.testing.assert_close(result.values, expected, atol=1e-12, rtol=0)


def test_per_input_and_class_choice_never_worse_than_shapley():
    d = 7
    game = mlp_game(num_features=d, num_inputs=3, seed=1)
    contributions = permutation_sampling(
        game, d, max_evaluations=602, generator=torch.Generator().manual_seed(0)
    )
    result = weighted_shap(game, contributions)
    assert (
        result.values.shape == (3, d, 3)
        and result.choice.shape == (3, 3)
        and result.errors.shape == (3, 13, 3)
    )
    shapley = result.errors[:, result.names.index(SHAPLEY)]
    chosen = result.errors.gather(1, result.choice.unsqueeze(1)).squeeze(1)
    assert (chosen <= shapley).all() and (chosen < shapley).any()
    torch.testing.assert_close(chosen, result.errors.min(1).values)
    for b, c in itertools.product(range(3), range(3)):
        torch.testing.assert_close(result.values[b, :, c], result.candidates[b, result.choice[b, c], :, c])
    assert (result.recovery_evaluations <= 13 * 3 * (d + 1)).all()


def test_weighted_shap_attribution_of_a_linear_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).eval()
    players = FeatureGroups(5)
    x, base = torch.randn(4, 5), torch.randn(5)
    explainer = build_attribution(
        "weighted_shap",
        model,
        players,
        masker=BaselineFill(players, fill=base),
        link="logits",
        max_evaluations=82,
    )
    assert isinstance(explainer, WeightedSHAP)
    values = explainer.attribute(x, target=torch.tensor([2, 0, 1, 2]))
    torch.testing.assert_close(values, model.weight[[2, 0, 1, 2]].detach() * (x - base), atol=1e-5, rtol=1e-5)
    assert explainer.last_choice.errors.shape == (4, 13, 1)


def test_candidates_must_include_shapley():
    game = table_game(torch.zeros(8, 1), 3)
    contributions = permutation_sampling(game, 3, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="Beta\\(1,1\\)"):
        weighted_shap(game, contributions, {"LOO-first": torch.tensor([1.0, 0.0, 0.0])})
