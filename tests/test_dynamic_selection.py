"""Dynamic feature selection: selection invariants, masking, costs, the relaxation, and a problem that needs it."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_xai.algorithms.dynamic_selection import (
    DynamicSelectionModule,
    DynamicSelector,
    MaskedPredictorModule,
    build_network,
    build_players,
    concrete_sample,
    load_predictor_state,
)
from lit_xai.algorithms.dynamic_selection.baselines import (
    evaluate_orders,
    greedy_static_order,
    permutation_importance,
    random_orders,
    ranking,
    shapley_ranking,
)
from lit_xai.data.base import TensorDictDataset
from lit_xai.masking import AppendMask
from lit_xai.players import FeatureGroups, PatchGrid


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread (and two pytest workers then share two cores cleanly)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_selector(players, num_classes=3, in_chans=1, costs=None) -> DynamicSelector:
    torch.manual_seed(0)
    predictor = build_network("mlp", players, num_classes, in_chans, {"hidden": [16]})
    policy = build_network("mlp", players, players.num_players, in_chans, {"hidden": [16]})
    return DynamicSelector(predictor, policy, players, costs=costs).eval()


PLAYER_CASES = {
    "pixels": (PatchGrid(4, 1), (1, 4, 4)),
    "patches": (PatchGrid(4, 2), (2, 4, 4)),
    "tabular": (FeatureGroups(7), (7,)),
    "groups": (FeatureGroups(5, [[0, 3], [1], [2, 4]]), (5,)),
}


@pytest.mark.parametrize("case", list(PLAYER_CASES))
def test_selection_never_repeats_and_respects_budget(case):
    players, shape = PLAYER_CASES[case]
    selector = random_selector(players, in_chans=shape[0] if len(shape) == 3 else 1)
    x = torch.randn(32, *shape)
    d = players.num_players
    for budget in (0, 1, d - 1, d):
        selection = selector.select(x, budget=budget)
        assert selection.order.shape == (32, budget) and selection.logits.shape == (32, budget + 1, 3)
        assert (selection.num_selected == budget).all()
        for row, keep in zip(selection.order, selection.keep):
            assert len(set(row.tolist())) == budget  # no repeats
            assert sorted(row.tolist()) == keep.nonzero().flatten().tolist()
        # The prediction after k steps is the predictor on exactly the first k chosen features.
        expected = evaluate_orders(selector.predict, x, selection.order, d, budget)
        torch.testing.assert_close(selection.logits, expected)


@pytest.mark.parametrize("case", list(PLAYER_CASES))
def test_masked_out_features_cannot_influence_anything(case):
    players, shape = PLAYER_CASES[case]
    selector = random_selector(players, in_chans=shape[0] if len(shape) == 3 else 1)
    x = torch.randn(16, *shape)
    selection = selector.select(x, budget=2)
    # Overwrite every feature that was never selected: the choices and every prediction must stay the same.
    missing = 1 - players.expand_mask(selection.keep)
    x_changed = x + 5.0 * torch.randn_like(x) * missing
    again = selector.select(x_changed, budget=2)
    assert torch.equal(again.order, selection.order)
    torch.testing.assert_close(again.logits, selection.logits)
    keep = torch.rand(16, players.num_players) < 0.5
    torch.testing.assert_close(
        selector.predict(x, keep), selector.predict(x + 9 * (1 - players.expand_mask(keep)), keep)
    )


@pytest.mark.parametrize("case", list(PLAYER_CASES))
def test_soft_masked_input_matches_append_mask_on_hard_masks(case):
    players, shape = PLAYER_CASES[case]
    selector = random_selector(players, in_chans=shape[0] if len(shape) == 3 else 1)
    x, keep = torch.randn(8, *shape), torch.rand(8, players.num_players) < 0.5
    torch.testing.assert_close(
        selector.masked_input(x, keep.float()), AppendMask(players).mask_input(x, keep)
    )


def test_concrete_sample_is_a_relaxed_draw_from_the_policy():
    logits = torch.tensor([[1.0, 0.0, -1.0, float("-inf")]]).expand(20000, -1)
    generator = torch.Generator().manual_seed(0)
    soft = concrete_sample(logits, temperature=0.5, generator=generator)
    torch.testing.assert_close(soft.sum(-1), torch.ones(20000))
    assert (soft[:, 3] == 0).all()  # excluded features get no weight
    # Gumbel-max: the argmax of a sample is distributed as softmax(logits), at any temperature.
    freq = torch.bincount(soft.argmax(-1), minlength=4).float() / 20000
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.015, rtol=0)
    # Lower temperature, closer to one-hot.
    colder = concrete_sample(logits, temperature=0.05, generator=generator)
    assert colder.amax(-1).mean() > soft.amax(-1).mean() > 0.5


def test_cost_budget_and_confidence_stopping():
    players = FeatureGroups(6)
    selector = random_selector(players, costs=[1.0, 2.0, 3.0, 1.0, 5.0, 0.5])
    x = torch.randn(64, 6)
    selection = selector.select(x, max_cost=3.0)
    spent = (selection.keep.float() * selector.costs).sum(-1)
    assert (spent <= 3.0 + 1e-6).all()
    # It only stops when nothing affordable is left.
    left = (~selection.keep) & (spent.unsqueeze(1) + selector.costs <= 3.0)
    assert not left.any()
    for threshold in (0.4, 0.5):
        stopped = selector.select(x, confidence=threshold)
        final = stopped.final_logits.softmax(-1).amax(-1)
        # Either confident enough or out of features; and one step earlier it was not yet confident.
        assert ((final >= threshold) | (stopped.num_selected == 6)).all()
        rows = torch.arange(64)
        before = stopped.logits[rows, (stopped.num_selected - 1).clamp_min(0)].softmax(-1).amax(-1)
        assert ((before < threshold) | (stopped.num_selected == 0)).all()


def test_bad_inputs_raise_clear_errors():
    players = FeatureGroups(5)
    selector = random_selector(players)
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="budget"):
        selector.select(x, budget=6)
    with pytest.raises(ValueError, match="keep must have shape"):
        selector.predict(x, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected tabular input"):
        selector.select(torch.randn(4, 6), budget=2)
    for costs in ([1.0, 0.0, 1.0, 1.0, 1.0], [1.0, -2.0, 1.0, 1.0, 1.0], [1.0] * 4):
        with pytest.raises(ValueError, match="costs"):
            random_selector(players, costs=costs)
        with pytest.raises(ValueError, match="costs"):
            DynamicSelectionModule(num_classes=2, num_features=5, max_features=2, costs=costs)
    with pytest.raises(ValueError, match="max_features"):
        DynamicSelectionModule(num_classes=2, num_features=5, max_features=6)
    with pytest.raises(ValueError, match="exactly one of"):
        build_players(image_size=8, num_features=5)
    with pytest.raises(ValueError, match="confidence"):
        selector.select(x, confidence=1.5)


# ------------------------------------------------------------------------------------------------------------
# Training on small synthetic problems (a few seconds each)
# ------------------------------------------------------------------------------------------------------------


def routing_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0's sign says whether feature 1 or feature 2 holds the label; its size is an 80%-correct hint.

    Greedy CMI picks feature 0 first (0.28 bits against 0.19 for features 1 or 2), then feature 1 if feature 0 is
    negative and feature 2 if positive: 100% accuracy with two features, against 90% for the best static pair.
    Features 3-5 are noise.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    z = torch.randint(0, 2, (n,), generator=g)
    hint = torch.where(torch.rand(n, generator=g) < 0.8, y, 1 - y)
    x = torch.randn(n, 6, generator=g)
    x[:, 0] = (2 * z - 1) * (1 + hint)
    coin = torch.randint(0, 2, (n, 2), generator=g)
    x[:, 1] = torch.where(z == 0, y, coin[:, 0]) * 2.0 - 1
    x[:, 2] = torch.where(z == 1, y, coin[:, 1]) * 2.0 - 1
    return x, y


def cost_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 is the label, feature 1 the label with 15% flipped, features 2-3 noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g)
    x[:, 0] = 2.0 * y - 1
    x[:, 1] = 2.0 * torch.where(torch.rand(n, generator=g) < 0.85, y, 1 - y) - 1
    return x, y


def loaders(problem, n_train=2000, n_val=1000):
    train = TensorDictDataset(*problem(n_train, 1))
    val = TensorDictDataset(*problem(n_val, 2))
    return DataLoader(train, batch_size=250, shuffle=True), DataLoader(val, batch_size=500)


def fit(module, train, val, epochs):
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train, val)
    return module.eval()


def train_selector(problem, num_features, max_features, costs=None, seed=0) -> DynamicSelector:
    L.seed_everything(seed, verbose=False)
    train, val = loaders(problem)
    net = {"hidden": [32, 32]}
    spec = dict(num_classes=2, num_features=num_features, predictor_kwargs=net)
    pretrain = fit(MaskedPredictorModule(**spec, lr=3e-3), train, val, epochs=8)
    module = DynamicSelectionModule(
        **spec,
        policy_kwargs=net,
        max_features=max_features,
        temperatures=[1.0, 0.3, 0.1],
        epochs_per_temperature=3,
        lr=3e-3,
        costs=costs,
    )
    module.selector.predictor.load_state_dict(pretrain.predictor.state_dict())
    return fit(module, train, val, epochs=9).selector


def test_policy_is_dynamic_where_it_should_be_and_beats_the_best_static_order():
    selector = train_selector(routing_problem, num_features=6, max_features=2)
    x, y = routing_problem(2000, 3)
    selection = selector.select(x, budget=2)
    assert (selection.order[:, 0] == 0).float().mean() > 0.9
    negative, positive = x[:, 0] < 0, x[:, 0] > 0
    assert (selection.order[negative, 1] == 1).float().mean() > 0.9
    assert (selection.order[positive, 1] == 2).float().mean() > 0.9
    dynamic = (selection.final_logits.argmax(-1) == y).float().mean()
    # The best static order, by brute force over every pair, with the same predictor.
    static = max(
        (selector.predict(x, keep.expand(2000, -1)).argmax(-1) == y).float().mean()
        for i in range(6)
        for j in range(i + 1, 6)
        for keep in [torch.zeros(1, 6, dtype=torch.bool).index_fill(1, torch.tensor([i, j]), True)]
    )
    assert static < 0.93  # the analytic best static pair is 90% accurate
    assert dynamic > 0.97 and dynamic > static + 0.05


def test_costs_change_the_order_as_expected():
    x, _ = cost_problem(1000, 3)
    # Equal costs: the noiseless feature 0 comes first.
    plain = train_selector(cost_problem, num_features=4, max_features=1)
    assert (plain.select(x, budget=1).order[:, 0] == 0).float().mean() > 0.9
    # Feature 0 costs 4x: it carries ln 2 = 0.69 nats (0.17 per unit) against 0.27 for feature 1 -> feature 1.
    costly = train_selector(cost_problem, num_features=4, max_features=1, costs=[4.0, 1.0, 1.0, 1.0])
    assert (costly.select(x, budget=1).order[:, 0] == 1).float().mean() > 0.9


# ------------------------------------------------------------------------------------------------------------
# Lightning: temperature schedule, best-state restore, checkpoints
# ------------------------------------------------------------------------------------------------------------


def test_temperature_schedule_restores_best_hard_state_and_checkpoints_load_safely(tmp_path):
    L.seed_everything(0, verbose=False)
    train, val = loaders(cost_problem, 500, 200)
    spec = dict(num_classes=2, num_features=4, predictor_kwargs={"hidden": [16]})
    pretrain = MaskedPredictorModule(**spec)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(pretrain, train, val)
    path = tmp_path / "pretrain.ckpt"
    trainer.save_checkpoint(path)
    module = DynamicSelectionModule(
        **spec,
        policy_kwargs={"hidden": [16]},
        predictor_checkpoint=str(path),
        max_features=2,
        temperatures=[1.0, 0.5, 0.1],
        epochs_per_temperature=2,
    )
    for name, value in module.selector.predictor.state_dict().items():
        torch.testing.assert_close(value, pretrain.predictor.state_dict()[name])
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(pl_module.temperature)

        def on_validation_end(self, trainer, pl_module):  # after the module's epoch-end logging
            if not trainer.sanity_checking:
                seen.append(float(trainer.callback_metrics["val/hard_loss"]))

    trainer = L.Trainer(
        max_epochs=6,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[Record()],
        enable_checkpointing=False,
    )
    trainer.fit(module, train, val)
    assert seen[0::2] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    best_loss, best_state = module._best
    assert math.isclose(best_loss, min(seen[1::2]), rel_tol=1e-6)
    for name, value in module.selector.state_dict().items():
        torch.testing.assert_close(value, best_state[name])
    # The restored state really has that hard validation loss.
    assert math.isclose(
        trainer.validate(module, val, verbose=False)[0]["val/hard_loss"], best_loss, rel_tol=1e-5
    )
    # Checkpoints (with the kept best states) load with weights_only=True.
    path = tmp_path / "joint.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["dynamic_selection"]["best"][0] == best_loss
    restored = DynamicSelectionModule(**checkpoint["hyper_parameters"] | {"predictor_checkpoint": None})
    restored.load_state_dict(checkpoint["state_dict"])
    x = torch.randn(5, 4)
    assert torch.equal(restored.eval().selector.select(x, 2).order, module.eval().selector.select(x, 2).order)
    assert set(load_predictor_state(str(path))) == set(module.selector.predictor.state_dict())


# ------------------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------------------


class FirstFeature(nn.Module):
    """A 'predictor' that reads only feature 2 (tabular, AppendMask input of 2 * 4 columns)."""

    def forward(self, z):
        return torch.stack([-z[:, 2], z[:, 2]], dim=1) * 3


def test_static_baselines_on_a_known_predictor():
    players = FeatureGroups(4)
    masker = AppendMask(players)
    predict = lambda x, keep: masker(FirstFeature(), x, keep)  # noqa: E731
    x = torch.randn(400, 4)
    y = (x[:, 2] > 0).long()
    importance = permutation_importance(predict, x, y, players, generator=torch.Generator().manual_seed(0))
    assert importance[2] > 0.5 and importance[[0, 1, 3]].abs().max() == 0
    assert ranking(importance)[0] == 2
    assert greedy_static_order(predict, x, y, 4, 2)[0] == 2
    # Restricted to a candidate pool, forward selection only ever returns candidates, best first.
    assert greedy_static_order(predict, x, y, 4, 2, candidates=torch.tensor([3, 2]))[0] == 2
    assert sorted(greedy_static_order(predict, x, y, 4, 2, candidates=torch.tensor([0, 3])).tolist()) == [
        0,
        3,
    ]
    with pytest.raises(ValueError, match="candidates"):
        greedy_static_order(predict, x, y, 4, 3, candidates=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="distinct"):
        greedy_static_order(predict, x, y, 4, 1, candidates=torch.tensor([0, 0]))
    assert shapley_ranking(torch.tensor([[0.1, -3.0, 0.0], [0.2, 1.0, 0.5]])).tolist() == [1, 2, 0]
    orders = random_orders(50, 4, torch.Generator().manual_seed(0))
    assert (orders.sort(dim=1).values == torch.arange(4)).all()
    curve = evaluate_orders(predict, x, torch.tensor([2, 0, 1, 3]), 4, 2)
    assert curve.shape == (400, 3, 2)
    assert (curve[:, 0] == 0).all() and (curve[:, 1].argmax(-1) == y).all()
