"""The explainer-vs-KernelSHAP comparison (ViT Shapley, Fig. 4): KernelSHAP's estimates at every budget are exact on
an additive game, and estimates computed ahead (the benchmark caches them while the explainer trains) are the ones
the comparison scores."""

import torch
from torch import nn

from lit_xai.algorithms.vit_shapley.evaluation import compare_with_kernel_shap, kernel_shap_estimates
from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups

D = 6
BUDGETS = [16, 64, 256]


class LinearExplained(nn.Module):
    """What the comparison reads of an amortized explainer, around a linear surrogate with zero filling, whose
    Shapley values are exact: ``w[target, i] * x_i``. Its explanations are those plus fixed noise."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.surrogate = nn.Linear(D, 3).double().eval()
        self.masker = BaselineFill(FeatureGroups(D))
        self.link = "logits"
        self.num_players = D
        self.noise = noise

    def exact(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.surrogate.weight[target].detach() * x

    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.exact(x, target) + self.noise * torch.linspace(-1, 1, D, dtype=x.dtype)


def test_kernel_shap_is_exact_on_an_additive_game_at_every_budget():
    net = LinearExplained(noise=0.1)
    x, target = torch.randn(4, D, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    estimates = kernel_shap_estimates(net, x, target, BUDGETS)
    assert sorted(estimates) == BUDGETS
    for values in estimates.values():
        torch.testing.assert_close(values.double(), net.exact(x, target), atol=1e-5, rtol=0)
    comparison = compare_with_kernel_shap(net, x, target, net.exact(x, target), BUDGETS)
    assert comparison.explainer["squared_error"] > 0.01
    assert comparison.matching_budget == 16


def test_estimates_given_ahead_are_the_ones_scored():
    net = LinearExplained(noise=0.1)
    x, target = torch.randn(4, D, dtype=torch.float64), torch.tensor([2, 1, 0, 1])
    truth = net.exact(x, target)
    computed = compare_with_kernel_shap(net, x, target, truth, BUDGETS)
    reused = compare_with_kernel_shap(
        net, x, target, truth, BUDGETS, kernel_estimates=kernel_shap_estimates(net, x, target, BUDGETS)
    )
    assert reused.kernel_shap == computed.kernel_shap and reused.matching_budget == computed.matching_budget
    # Estimates whose error falls with the budget: the first one below the explainer's error (0.1^2 * Σ t^2 over
    # D points of linspace(-1, 1)) is the matching budget.
    offsets = {16: 0.5, 64: 0.2, 256: 0.01}
    noisy = {b: truth + offset for b, offset in offsets.items()}
    given = compare_with_kernel_shap(net, x, target, truth, BUDGETS, kernel_estimates=noisy)
    assert given.kernel_shap[16]["squared_error"] == torch.tensor(D * 0.25).item()
    assert given.matching_budget == 256
