"""Attribution baselines on toy models whose answers are known analytically (captum's habit)."""

import pytest
import torch
from torch import nn

from lit_xai.attribution import (
    RISE,
    Banzhaf,
    BetaShapley,
    GradCAM,
    Gradient,
    GradientXInput,
    IntegratedGradients,
    KernelSHAP,
    LeaveOneOut,
    LeverageSHAP,
    PermutationSHAP,
    SmoothGrad,
)
from lit_xai.attribution.integrated_gradients import INTEGRATION_METHODS, integration_rule
from lit_xai.masking import BaselineFill
from lit_xai.models import SmallCNN
from lit_xai.players import FeatureGroups, PatchGrid

GROUPS = [[0, 3], [1], [2, 4, 5], [6]]  # four players over seven columns


def linear_model(num_features: int = 7, num_classes: int = 3) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(num_features, num_classes).eval()


def per_player(values: torch.Tensor, players: FeatureGroups) -> torch.Tensor:
    """Column values (B, F) summed within each player -> (B, d)."""
    return players.pool(values, reduce="sum")


class Additive(nn.Module):
    """``f_c(x) = sum_j a_cj sin(x_j) + b_c``: nonlinear per feature, no interactions."""

    def __init__(self, num_features: int = 7, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Parameter(torch.randn(num_classes, num_features))
        self.b = nn.Parameter(torch.randn(num_classes))
        self.eval()

    def forward(self, x):
        return torch.sin(x) @ self.a.T + self.b


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
def test_integration_rules_integrate_polynomials(method):
    points, weights = integration_rule(method, 16)
    assert points.min() >= 0 and points.max() <= 1
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    if method in ("riemann_middle", "riemann_trapezoid", "gausslegendre"):  # exact for straight lines
        torch.testing.assert_close((weights * points).sum(), torch.tensor(0.5, dtype=torch.float64))
    if method == "gausslegendre":  # exact up to degree 2 * 16 - 1
        torch.testing.assert_close((weights * points**31).sum(), torch.tensor(1 / 32, dtype=torch.float64))
    assert abs((weights * points**2).sum() - 1 / 3) < 1 / 16  # first-order rules: error O(1 / steps)


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
@pytest.mark.parametrize("baseline", [None, "tensor"])
def test_integrated_gradients_of_a_linear_model(method, baseline):
    """IG of ``w.x + b`` is ``w * (x - baseline)`` exactly, whatever the quadrature."""
    model, players = linear_model(), FeatureGroups(7)
    x = torch.randn(5, 7)
    base = torch.randn(7) if baseline == "tensor" else None
    target = torch.tensor([0, 1, 2, 0, 1])
    ig = IntegratedGradients(model, players, steps=3, method=method, baseline=base, internal_batch_size=4)
    expected = model.weight[target].detach() * (x - (0 if base is None else base))
    torch.testing.assert_close(ig.attribute(x, target), expected)


def test_gradient_x_input_of_a_linear_model():
    model, players = linear_model(), FeatureGroups(7, GROUPS)
    x = torch.randn(4, 7)
    values = GradientXInput(model, players).attribute(x, target=2)
    torch.testing.assert_close(values, per_player(model.weight[2].detach() * x, players))
    grads = Gradient(model, players, abs=False).attribute_pixels(x, target=2)
    torch.testing.assert_close(grads, model.weight[2].detach().expand(4, 7))


def test_integrated_gradients_completeness_on_a_smooth_model():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, 3))
    players, x, base = FeatureGroups(7, GROUPS), torch.randn(6, 7), torch.randn(7)
    ig = IntegratedGradients(model, players, steps=24, baseline=base)
    values = ig.attribute(x, target=1)
    with torch.no_grad():
        gain = model(x)[:, 1] - model(base.expand(6, 7))[:, 1]
    torch.testing.assert_close(values.sum(1), gain, atol=1e-5, rtol=1e-5)
    assert ig.completeness_gap(x, values, target=1).abs().max() < 1e-5


def test_integrated_gradients_completeness_on_a_cnn():
    torch.manual_seed(3)
    model, players = SmallCNN(3, 4, channels=(4, 8)).eval(), PatchGrid(8, 2)
    x = torch.randn(2, 3, 8, 8)
    ig = IntegratedGradients(model, players, steps=64, method="riemann_trapezoid", internal_batch_size=64)
    values = ig.attribute(x)
    with torch.no_grad():
        logits = model(x)
        gain = (
            logits.max(1).values - model(torch.zeros_like(x)).gather(1, logits.argmax(1, keepdim=True))[:, 0]
        )
    # ReLU networks are piecewise linear: the quadrature error is small but not zero.
    assert (values.sum(1) - gain).abs().max() < 0.02 * gain.abs().max() + 1e-3


def test_smoothgrad_of_a_linear_model_is_its_weights():
    """Noise cannot change a constant gradient."""
    model, players = linear_model(), FeatureGroups(7)
    values = SmoothGrad(
        model, players, num_samples=5, noise_level=0.5, internal_batch_size=7
    ).attribute_pixels(torch.randn(3, 7), target=1)
    torch.testing.assert_close(values, model.weight[1].detach().expand(3, 7))


def test_smoothgrad_averages_noisy_gradients():
    """For ``f = sum x^2`` the gradient ``2 (x + noise)`` averages to about ``2 x``."""
    model = _Lambda(lambda x: (x**2).sum(1, keepdim=True))
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    values = SmoothGrad(model, FeatureGroups(4), num_samples=4000, noise_level=0.1).attribute_pixels(x, 0)
    torch.testing.assert_close(values, 2 * x, atol=0.1, rtol=0)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("groups", [None, GROUPS], ids=["columns", "groups"])
def test_leave_one_out_of_an_additive_model(groups):
    """Removing player i (zero fill) changes an additive model by exactly player i's contribution."""
    model, players = Additive(), FeatureGroups(7, groups)
    x = torch.randn(5, 7)
    loo = LeaveOneOut(model, players, BaselineFill(players), link="logits", batch_size=9)
    contribution = model.a.detach().unsqueeze(0) * torch.sin(x).unsqueeze(1)  # (B, C, F); sin(0) = 0
    expected = torch.stack([per_player(contribution[:, c], players) for c in range(3)], dim=-1)
    torch.testing.assert_close(loo.attribute_all(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loo.attribute(x, 1), expected[..., 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("paired", [True, False])
def test_kernel_shap_of_a_linear_model(paired):
    """Shapley values of ``w.x`` with players filled by a baseline are ``w * (x - baseline)`` per player."""
    model, players = linear_model(), FeatureGroups(7, GROUPS)
    x, base = torch.randn(4, 7), torch.randn(7)
    explainer = KernelSHAP(
        model,
        players,
        BaselineFill(players, fill=base),
        link="logits",
        num_coalitions=32,
        paired=paired,
        seed=1,
    )
    values = explainer.attribute(x, target=torch.tensor([2, 0, 1, 2]))
    expected = per_player(model.weight[[2, 0, 1, 2]].detach() * (x - base), players)
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)
    assert explainer.last_result.converged
    every = explainer.attribute_all(x)
    torch.testing.assert_close(
        every[..., 0], per_player(model.weight[0].detach() * (x - base), players), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("paired", [True, False])
def test_leverage_shap_of_a_linear_model(paired):
    """Leverage SHAP's regression is exact on a linear model as soon as its coalitions identify the players."""
    model, players = linear_model(), FeatureGroups(7, GROUPS)
    x, base = torch.randn(4, 7), torch.randn(7)
    explainer = LeverageSHAP(
        model, players, BaselineFill(players, fill=base), link="logits", max_evaluations=12, paired=paired
    )
    values = explainer.attribute(x, target=torch.tensor([2, 0, 1, 2]))
    expected = per_player(model.weight[[2, 0, 1, 2]].detach() * (x - base), players)
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)
    assert explainer.last_result.num_evaluations == 12


def test_rise_of_an_additive_model():
    """For an additive game, ``E[v(S) | i in S] - E[v(S) | i not in S]`` is player i's contribution."""
    model, players = Additive(), FeatureGroups(7, GROUPS)
    x = torch.randn(2, 7)
    rise = RISE(
        model, players, BaselineFill(players), num_masks=20000, keep_prob=0.5, link="logits", batch_size=4096
    )
    kept = rise.attribute(x, target=0)
    # E[v | i kept] = b + c_i + p * sum_{j != i} c_j, so kept_i - kept_j = (1 - p) (c_i - c_j).
    contribution = per_player(model.a[0].detach() * torch.sin(x), players)
    centred = lambda v: v - v.mean(1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(centred(kept), 0.5 * centred(contribution), atol=0.05, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda *args: PermutationSHAP(*args, link="logits", max_evaluations=2 + 2 * 3),
        lambda *args: BetaShapley(*args, alpha=16, beta=1, link="logits", max_evaluations=2 + 2 * 3),
        lambda *args: BetaShapley(*args, alpha=0.5, beta=4, link="logits", max_evaluations=2 + 4 * 3),
    ],
    ids=["shapley", "beta(16,1)", "beta(0.5,4)"],
)
def test_every_semivalue_of_a_linear_model_is_w_times_x_minus_baseline(make):
    """Every marginal contribution of player i in ``w.x`` is ``w_i (x_i - baseline_i)``: so is every semivalue,
    from any number of permutations."""
    model, players = linear_model(), FeatureGroups(7, GROUPS)
    x, base = torch.randn(4, 7), torch.randn(7)
    explainer = make(model, players, BaselineFill(players, fill=base))
    values = explainer.attribute(x, target=torch.tensor([2, 0, 1, 2]))
    expected = per_player(model.weight[[2, 0, 1, 2]].detach() * (x - base), players)
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-5)
    assert explainer.last_result.num_evaluations <= explainer.max_evaluations
    every = explainer.attribute_all(x)
    torch.testing.assert_close(every[..., 1], per_player(model.weight[1].detach() * (x - base), players))


def test_banzhaf_of_an_additive_model_and_from_rises_evaluations():
    """The Banzhaf value of an additive game is each player's own contribution; RISE's p = 1/2 masks give it."""
    model, players = Additive(), FeatureGroups(7, GROUPS)
    x = torch.randn(2, 7)
    banzhaf = Banzhaf(model, players, BaselineFill(players), num_masks=20000, link="logits", batch_size=4096)
    values = banzhaf.attribute(x, target=0)
    contribution = per_player(model.a[0].detach() * torch.sin(x), players)
    # Each mean is over ~10,000 coalitions of a sum of 3 other players' terms (|c| < 3): standard error < 0.03.
    torch.testing.assert_close(values, contribution, atol=0.1, rtol=0)
    rise = RISE(model, players, BaselineFill(players), num_masks=20000, link="logits", batch_size=4096)
    saliency, from_rise = rise.attribute_all_and_banzhaf(x)
    torch.testing.assert_close(saliency, rise.attribute_all(x))
    torch.testing.assert_close(from_rise, banzhaf.attribute_all(x))
    with pytest.raises(ValueError, match="keep_prob=0.3"):
        RISE(model, players, BaselineFill(players), keep_prob=0.3).attribute_all_and_banzhaf(x)


def test_gradcam_of_a_cnn_matches_the_definition():
    torch.manual_seed(4)
    model, players = SmallCNN(3, 4, channels=(4, 8)).eval(), PatchGrid(8, 2)
    x = torch.randn(3, 3, 8, 8)
    cam = GradCAM(model, players, relu=False)
    feats = model.forward_features(x)
    grads = torch.autograd.grad(model.head(feats)[:, 2].sum(), feats)[0]
    expected = (grads.mean((2, 3), keepdim=True) * feats).sum(1)  # (B, 4, 4): one cell per player
    torch.testing.assert_close(cam.attribute_grid(x, 2), expected.detach())
    torch.testing.assert_close(cam.attribute(x, 2), expected.detach().flatten(1))
    relu = GradCAM(model, players).attribute(x, 2)
    torch.testing.assert_close(relu, expected.detach().flatten(1).clamp_min(0))
    coarse = GradCAM(model, PatchGrid(8, 4), relu=False).attribute(x, 2)  # 2x2 players over the 4x4 map
    torch.testing.assert_close(coarse, nn.functional.avg_pool2d(expected.detach(), 2).flatten(1))


def test_gradcam_of_a_timm_cnn_uses_forward_features():
    import timm

    torch.manual_seed(5)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    players, x = PatchGrid(64, 16), torch.randn(2, 3, 64, 64)
    cam = GradCAM(model, players)
    assert cam.layer is None and cam.layer_name == "forward_features"
    grid = cam.attribute_grid(x, 1)
    assert grid.shape == (2, 2, 2) and (grid >= 0).all()
    assert cam.attribute(x, 1).shape == (2, 16) and cam.attribute_pixels(x, 1).shape == (2, 64, 64)
