"""Sanity checks (Adebayo et al., NeurIPS 2018): layer order from the model, re-initialisation, map similarities
against scipy and by hand, and the checks on models whose maps are known (a linear model's gradient is its weight
row; a model-independent "explainer" never changes)."""

import pytest
import torch
from torch import nn

from lit_xai.metrics.functional.map_similarity import map_spearman, map_ssim
from lit_xai.sanity_checks import (
    cascading_randomization,
    independent_randomization,
    parameter_layers,
    permuted_labels,
    randomize_layer,
)

stats = pytest.importorskip("scipy.stats")


class OutOfOrder(nn.Module):
    """Registers the head before the body and owns a parameter itself; one module is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.body = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
        self.unused = nn.Linear(2, 2)
        self.offset = nn.Parameter(torch.zeros(5))

    def forward(self, x):
        return self.head(self.body(x + self.offset))


def test_layers_follow_the_forward_pass():
    assert parameter_layers(OutOfOrder(), torch.randn(2, 5)) == ["", "body.0", "head"]


def test_randomize_layer_is_seeded_and_touches_only_that_layer():
    torch.manual_seed(0)
    model = OutOfOrder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomize_layer(model.head, torch.Generator().manual_seed(3))
    after = model.state_dict()
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("head."))
    again = OutOfOrder()
    again.load_state_dict(before)
    randomize_layer(again.head, torch.Generator().manual_seed(3))
    assert torch.equal(again.head.weight, model.head.weight)
    randomize_layer(
        model, torch.Generator().manual_seed(3)
    )  # no reset_parameters: Gaussian, zero std -> 0.02
    assert model.offset.abs().max() > 0 and model.offset.std() < 0.1


def test_similarities_against_scipy_and_by_hand():
    torch.manual_seed(0)
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    for absolute in (False, True):
        ours = map_spearman(a, b, absolute=absolute)
        f = (lambda t: t.abs()) if absolute else (lambda t: t)
        expected = [stats.spearmanr(f(a[i]).numpy(), f(b[i]).numpy())[0] for i in range(3)]
        assert ours.tolist() == pytest.approx(expected, abs=1e-6)
    assert map_ssim(a, a, (4, 4)).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    # One window over the whole grid: SSIM is the global formula on the maps scaled to [0, 1].
    x = (a - a.amin(1, keepdim=True)) / (a.amax(1, keepdim=True) - a.amin(1, keepdim=True))
    y = (b - b.amin(1, keepdim=True)) / (b.amax(1, keepdim=True) - b.amin(1, keepdim=True))
    mx, my = x.mean(1), y.mean(1)
    vx, vy = x.var(1, unbiased=False), y.var(1, unbiased=False)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
    c1, c2 = 1e-4, 9e-4
    expected = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    torch.testing.assert_close(map_ssim(a, b, (4, 4), window=4), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="window"):
        map_ssim(a, b, (4, 4), window=5)


def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad


def test_a_linear_models_gradient_follows_the_randomised_weights():
    torch.manual_seed(0)
    model = nn.Linear(12, 3)
    x, target = torch.randn(4, 12), torch.tensor([0, 1, 2, 0])
    seen = []

    def explain(m, inputs, t):
        seen.append(m)
        return gradient(m, inputs, t)

    trained = model.weight.detach().clone()
    (step,) = cascading_randomization(model, x, target, explain)
    assert step["layer"] == "" and torch.equal(model.weight, trained)  # the trained model is left alone
    randomised = seen[-1].weight.detach()
    assert not torch.equal(randomised, trained)
    expected = [stats.spearmanr(trained[t].numpy(), randomised[t].numpy())[0] for t in target.tolist()]
    assert step["spearman"].tolist() == pytest.approx(expected, abs=1e-6)


def test_a_model_independent_map_passes_as_unchanged_and_a_gradient_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    x, target = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    edge_detector = lambda m, inputs, t: inputs.abs()  # noqa: E731 - ignores the model, as Adebayo's edge detector
    for check in (cascading_randomization, independent_randomization):
        steps = check(model, x, target, edge_detector, grid=(4, 4))
        assert [s["layer"] for s in steps] == ["2", "0"]
        for step in steps:
            for key in ("spearman", "spearman_abs", "ssim"):
                assert step[key].tolist() == pytest.approx([1.0] * 5, abs=1e-6)
        steps = check(model, x, target, gradient, grid=(4, 4))
        assert all(float(step["spearman"].mean()) < 0.9 for step in steps)


def test_permuted_labels():
    labels = torch.arange(20) % 4
    permuted = permuted_labels(labels, seed=1)
    assert sorted(permuted.tolist()) == sorted(labels.tolist()) and not torch.equal(permuted, labels)
    assert torch.equal(permuted, permuted_labels(labels, seed=1))
