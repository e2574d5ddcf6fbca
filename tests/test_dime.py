"""DIME (Gadgil, Covert & Lee, ICLR 2024): the value network's target, exploration, stopping rules, costs, training."""

from __future__ import annotations

import copy
import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_xai.algorithms.dynamic_selection import (
    CMISelectionModule,
    CMISelector,
    MaskedPredictorModule,
    build_network,
    entropy,
    shared_trunk,
    tie_hidden_layers,
)
from lit_xai.data.base import TensorDictDataset
from lit_xai.players import FeatureGroups


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_cmi_selector(d=6, num_classes=3, costs=None, tie=False) -> CMISelector:
    torch.manual_seed(0)
    players = FeatureGroups(d)
    predictor = build_network("mlp", players, num_classes, kwargs={"hidden": [16]})
    value = build_network("mlp", players, d, kwargs={"hidden": [16]})
    if tie:
        tie_hidden_layers(predictor, value)
    return CMISelector(predictor, value, players, costs=costs).eval()


class Recorder(nn.Module):
    """Wraps a network and keeps the mask half of every input it sees (tabular AppendMask: ``[x * m, m]``)."""

    def __init__(self, net: nn.Module, d: int) -> None:
        super().__init__()
        self.net, self.d, self.masks = net, d, []

    def forward(self, z: Tensor) -> Tensor:
        self.masks.append(z[:, self.d :].detach().clone())
        return self.net(z)


def test_entropy_and_the_cmi_bound():
    assert torch.allclose(entropy(torch.zeros(2, 5)), torch.full((2,), math.log(5)))
    assert entropy(torch.tensor([[50.0, -50.0]])).item() < 1e-6
    selector = random_cmi_selector()
    x, keep = torch.randn(8, 6), torch.rand(8, 6) < 0.5
    logits = selector.predict(x, keep)
    cmi = selector.estimate_cmi(x, keep, logits)
    # 0 <= I(y; x_i | x_S) <= H(y | x_S), estimated with the prediction's entropy.
    assert (cmi >= 0).all() and (cmi <= entropy(logits).unsqueeze(1) + 1e-6).all()


def test_value_target_is_the_observed_loss_drop_and_the_predictor_loss_the_mean_over_subsets():
    selector = random_cmi_selector().train()
    assert all(
        m.p == 0 for m in selector.modules() if isinstance(m, nn.Dropout)
    )  # deterministic in train mode
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    predictor_loss, value_loss = selector.training_losses(x, y, num_steps=2, epsilon=0.0)
    # By hand: greedy picks by the estimated CMI, the target is CE(before) - CE(after) per sample.
    keep = torch.zeros(10, 6, dtype=torch.bool)
    losses, squared = [], []
    logits = selector.predict(x, keep)
    before = F.cross_entropy(logits, y, reduction="none")
    losses.append(before.mean())
    for _ in range(2):
        cmi = selector.estimate_cmi(x, keep, logits).masked_fill(keep, float("-inf"))
        action = cmi.argmax(dim=1)
        keep = keep.clone()
        keep[torch.arange(10), action] = True
        logits = selector.predict(x, keep)
        after = F.cross_entropy(logits, y, reduction="none")
        squared.append(((cmi[torch.arange(10), action] - (before - after)) ** 2).mean())
        losses.append(after.mean())
        before = after
    assert torch.allclose(predictor_loss, torch.stack(losses).mean(), atol=1e-6)
    assert torch.allclose(value_loss, torch.stack(squared).mean(), atol=1e-6)


def test_value_loss_trains_the_value_network_only_and_exploration_never_repeats():
    selector = random_cmi_selector(d=5)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    _, value_loss = selector.training_losses(x, y, num_steps=3, epsilon=0.5)
    value_loss.backward()
    assert all(p.grad is None for p in selector.predictor.parameters())
    assert all(p.grad is not None for p in selector.value_network.parameters())
    # Pure exploration over every feature: each step adds exactly one new feature, all end up acquired.
    selector.predictor = Recorder(selector.predictor, 5)
    selector.training_losses(x, y, num_steps=5, epsilon=1.0, generator=torch.Generator().manual_seed(0))
    sizes = torch.stack([m.sum(dim=1) for m in selector.predictor.masks])  # (steps + 1, B)
    assert torch.equal(sizes, torch.arange(6.0).unsqueeze(1).expand(6, 7))


def test_tied_hidden_layers_are_shared_and_mismatches_raise():
    selector = random_cmi_selector(tie=True)
    assert selector.predictor.net[1] is selector.value_network.net[1]
    assert selector.predictor.net[-1] is not selector.value_network.net[-1]
    players = FeatureGroups(6)
    with pytest.raises(ValueError, match="same input size and hidden widths"):
        tie_hidden_layers(
            build_network("mlp", players, 3, kwargs={"hidden": [16]}),
            build_network("mlp", players, 6, kwargs={"hidden": [8]}),
        )


def test_tied_networks_share_one_hidden_pass_with_the_same_losses_gradients_and_choices():
    """With tied hidden layers the selector runs them once per subset for both heads; without dropout that is the
    same computation as two separate passes (here: untied copies of the same weights)."""
    tied = random_cmi_selector(d=6, tie=True).train()  # dropout 0: train mode is deterministic
    # Separate deep copies break the tie and keep the values.
    untied = CMISelector(
        copy.deepcopy(tied.predictor), copy.deepcopy(tied.value_network), tied.players
    ).train()
    assert shared_trunk(tied.predictor, tied.value_network) is not None
    assert shared_trunk(untied.predictor, untied.value_network) is None
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    calls = []
    tied.predictor.net[1].register_forward_hook(lambda *_: calls.append(1))
    tied_losses = tied.training_losses(x, y, num_steps=3, epsilon=0.0)
    assert len(calls) == 4  # one hidden pass per visited subset (empty + 3 acquisitions), not two
    untied_losses = untied.training_losses(x, y, num_steps=3, epsilon=0.0)
    for a, b in zip(tied_losses, untied_losses):
        assert torch.allclose(a, b, atol=1e-6)
    sum(tied_losses).backward()
    sum(untied_losses).backward()
    # A tied weight receives what the predictor's and the value network's copies receive, summed.
    for i, layer in enumerate(tied.predictor.net):
        if isinstance(layer, nn.Linear) and i < len(tied.predictor.net) - 1:
            both = untied.predictor.net[i].weight.grad + untied.value_network.net[i].weight.grad
            assert torch.allclose(layer.weight.grad, both, atol=1e-6)
    assert torch.allclose(tied.predictor.net[-1].weight.grad, untied.predictor.net[-1].weight.grad, atol=1e-6)
    assert torch.allclose(
        tied.value_network.net[-1].weight.grad, untied.value_network.net[-1].weight.grad, atol=1e-6
    )
    tied_out, untied_out = tied.select(x, budget=4), untied.select(x, budget=4)
    assert torch.equal(tied_out.order, untied_out.order)
    assert torch.allclose(tied_out.logits, untied_out.logits, atol=1e-6)


def test_shared_trunk_needs_the_same_hidden_modules():
    players = FeatureGroups(6)
    a = build_network("mlp", players, 3, kwargs={"hidden": [16], "dropout": 0.1})
    b = build_network("mlp", players, 6, kwargs={"hidden": [16], "dropout": 0.2})
    tie_hidden_layers(a, b)
    assert (
        shared_trunk(a, b) is None
    )  # different dropout: the value network's hidden pass is not the predictor's
    b.net[3].p = 0.1
    assert list(shared_trunk(a, b)) == list(a.net[:-1])  # the same module objects
    assert shared_trunk(a, build_network("mlp", players, 6, kwargs={"hidden": [16], "dropout": 0.1})) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_stopping_rules_hold_exactly(seed):
    g = torch.Generator().manual_seed(seed)
    costs = torch.rand(8, generator=g) * 2 + 0.1
    selector = random_cmi_selector(d=8, costs=costs)
    x = torch.randn(64, 8, generator=g)
    # Budget: exactly min(budget, d) features (the bounded CMI is positive, so nothing stops earlier).
    out = selector.select(x, budget=3)
    assert (out.num_selected == 3).all() and out.order.shape == (64, 3)
    assert torch.equal(out.keep.sum(1), (out.order >= 0).sum(1))
    # Cost: never above max_cost, and a sample stops only when no remaining feature is affordable.
    out = selector.select(x, max_cost=1.5)
    spent = (out.keep.float() * costs).sum(1)
    assert (spent <= 1.5 + 1e-5).all()
    cheapest_left = costs.masked_fill(out.keep, float("inf")).amin(1)
    assert (spent + cheapest_left > 1.5).all()
    # Confidence: a sample stops at the first prediction that reaches the threshold, never later.
    out = selector.select(x, budget=8, confidence=0.5)
    probs = out.logits.softmax(-1).amax(-1)  # (B, 9)
    for i in range(64):
        k = out.num_selected[i].item()
        assert (probs[i, :k] < 0.5).all()
        assert k == 8 or probs[i, k] >= 0.5
    # Penalised: acquire while the best estimated CMI per unit cost exceeds the penalty, stop at the first that
    # does not.
    penalty = 0.3
    out = selector.select(x, penalty=penalty)
    for i in range(64):
        keep = torch.zeros(1, 8, dtype=torch.bool)
        for t in range(out.num_selected[i].item() + 1):
            logits = selector.predict(x[i : i + 1], keep)
            value = (selector.estimate_cmi(x[i : i + 1], keep, logits) / costs).masked_fill(
                keep, float("-inf")
            )
            if t == out.num_selected[i].item():
                assert t == 8 or value.max() <= penalty
            else:
                assert value.max() > penalty and value.argmax().item() == out.order[i, t].item()
                keep[0, out.order[i, t]] = True


def test_costs_divide_the_estimated_cmi():
    selector = random_cmi_selector(d=4, costs=[1.0, 1.0, 1.0, 1.0])
    x = torch.randn(32, 4)
    empty = torch.zeros(32, 4, dtype=torch.bool)
    cmi = selector.estimate_cmi(x, empty, selector.predict(x, empty))
    costs = torch.tensor([1.0, 3.0, 0.5, 2.0])
    costly = CMISelector(selector.predictor, selector.value_network, selector.players, costs=costs)
    assert torch.equal(costly.select(x, budget=1).order[:, 0], (cmi / costs).argmax(1))
    assert torch.equal(selector.select(x, budget=1).order[:, 0], cmi.argmax(1))


def test_bad_arguments_raise():
    selector = random_cmi_selector()
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="budget"):
        selector.select(x, budget=7)
    with pytest.raises(ValueError, match="penalty"):
        selector.select(x, penalty=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        selector.training_losses(x, torch.zeros(4, dtype=torch.long), num_steps=2, epsilon=1.5)
    with pytest.raises(ValueError, match="max_features"):
        CMISelectionModule(num_classes=2, num_features=5, max_features=6)


def one_feature_problem(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Feature 3 is the label (a sign) flipped for 10% of rows; features 0-2 and 4-5 are noise.

    The CMI of feature 3 with the label, given nothing, is ``ln 2 - H(0.1) = 0.368`` nats; every other one is 0.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 6, generator=g)
    x[:, 3] = 2.0 * torch.where(torch.rand(n, generator=g) < 0.9, y, 1 - y) - 1
    return x, y


def fit(module: L.LightningModule, problem, epochs: int) -> L.LightningModule:
    train = DataLoader(TensorDictDataset(*problem(1500, 1)), batch_size=250, shuffle=True)
    val = DataLoader(TensorDictDataset(*problem(500, 2)), batch_size=500)
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


def test_dime_acquires_the_feature_that_determines_the_label_first():
    L.seed_everything(0, verbose=False)
    spec = dict(num_classes=2, num_features=6, predictor_kwargs={"hidden": [32, 32]})
    pretrain = fit(MaskedPredictorModule(**spec, lr=3e-3), one_feature_problem, epochs=4)
    module = CMISelectionModule(**spec, value_kwargs={"hidden": [32, 32]}, max_features=2, lr=1e-2)
    module.selector.predictor.load_state_dict(pretrain.predictor.state_dict())
    selector = fit(module, one_feature_problem, epochs=10).selector
    x, y = one_feature_problem(1000, 3)
    out = selector.select(x, budget=1)
    assert (out.order[:, 0] == 3).float().mean() > 0.95
    assert (out.final_logits.argmax(-1) == y).float().mean() > 0.87  # 90% is the Bayes accuracy
    # Its estimate for the label's feature is near the true CMI, and above every other one. (The others are
    # only regressed when exploration happens to acquire them first, 5% of the time, so they stay near where
    # they started rather than reaching 0.)
    empty = torch.zeros(1000, 6, dtype=torch.bool)
    cmi = selector.estimate_cmi(x, empty, selector.predict(x, empty)).mean(0)
    true_cmi = math.log(2) + 0.1 * math.log(0.1) + 0.9 * math.log(0.9)
    assert abs(cmi[3].item() - true_cmi) < 0.1
    assert cmi[3] > cmi[torch.arange(6) != 3].max() + 0.03
    # Feature 3 makes the prediction 90% sure and nothing else helps: confidence 0.85 stops after one feature.
    assert selector.select(x, confidence=0.85).num_selected.float().mean() < 1.1


def test_standalone_validation_and_checkpoint_round_trip(tmp_path):
    L.seed_everything(0, verbose=False)
    module = CMISelectionModule(
        num_classes=2, num_features=6, max_features=2, epsilon_patience=0, epsilon_steps=5
    )
    module.epsilon = 0.01
    val = DataLoader(TensorDictDataset(*one_feature_problem(200, 2)), batch_size=100)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (metrics,) = trainer.validate(module, val)
    assert set(metrics) >= {"val/loss", "val/accuracy"} and module.epsilon == 0.01  # no schedule step
    path = tmp_path / "dime.ckpt"
    trainer.save_checkpoint(path)
    loaded = CMISelectionModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.epsilon == 0.01
    x = torch.randn(5, 6)
    assert torch.equal(
        loaded.eval().selector.select(x, budget=3).order, module.eval().selector.select(x, budget=3).order
    )


def test_the_learning_rate_plateau_continues_after_a_resume(tmp_path):
    """The plateau's counters (best loss, bad epochs) are in the checkpoint, so a resumed run decays on time."""
    L.seed_everything(0, verbose=False)
    module = CMISelectionModule(num_classes=2, num_features=6, max_features=2, plateau_patience=5)
    data = DataLoader(TensorDictDataset(*one_feature_problem(64, 2)), batch_size=32)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data, data)
    path = tmp_path / "dime.ckpt"
    trainer.save_checkpoint(path)
    plateau = module._plateau.state_dict()
    assert plateau["last_epoch"] == 2
    loaded = CMISelectionModule.load_from_checkpoint(path, weights_only=True)
    assert loaded._plateau_state == plateau
