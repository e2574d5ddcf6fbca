"""Causal explanatory graphs on a network whose causal structure is known, and the statistics behind them."""

import pytest
import torch
from scipy import stats
from torch import nn

from lit_xai.algorithms.causal_graph import (
    CausalFilterExplainer,
    benjamini_hochberg,
    build_causal_graph,
    one_sided_t_test,
    plot_causal_graph,
)
from lit_xai.players import PatchGrid


class Known(nn.Module):
    """x (1 channel, >= 0) -> a = ReLU(x, x, x) -> b = ReLU(a0 + a1, a2) -> mean over pixels -> logits.

    logit 0 = 2 mean(b0) + mean(b1), logit 1 = mean(b1). So for class 0 every a-filter and both b-filters are
    causal, with edges a0 -> b0, a1 -> b0, a2 -> b1 and no others; for class 1 only a2 and b1, edge a2 -> b1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 1, bias=False)
        self.relu_a = nn.ReLU()
        self.b = nn.Conv2d(3, 2, 1, bias=False)
        self.relu_b = nn.ReLU()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.a.weight.fill_(1.0)
            self.b.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 1.0]]))

    def forward(self, x):
        b = self.relu_b(self.b(self.relu_a(self.a(x))))
        return self.head(b.mean(dim=(2, 3)))


def images(n: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 1, 4, 4) * torch.linspace(0.5, 2.0, n).view(n, 1, 1, 1)


def test_one_sided_t_test_and_benjamini_hochberg():
    torch.manual_seed(0)
    effects = torch.randn(20, 3) + torch.tensor([0.0, 1.0, -1.0])
    mean, p = one_sided_t_test(effects)
    for column in range(3):
        expected = stats.ttest_1samp(effects[:, column].double().numpy(), 0.0, alternative="greater").pvalue
        assert float(p[column]) == pytest.approx(expected, rel=1e-6)
    constant = one_sided_t_test(torch.tensor([[2.0, 0.0, -1.0]]).expand(5, 3))[1]
    assert constant.tolist() == [0.0, 1.0, 1.0]  # no noise: positive is certain, zero or negative never
    # BH at 0.05 with m = 5: thresholds 0.01, 0.02, 0.03, 0.04, 0.05 for the sorted p-values 0.001, 0.025, 0.03,
    # 0.045, 0.5. The largest passing rank is 3, so rank 2 is rejected although 0.025 > 0.02 (step-up).
    p_values = torch.tensor([0.001, 0.045, 0.025, 0.5, 0.03], dtype=torch.float64)
    assert benjamini_hochberg(p_values, 0.05).tolist() == [True, False, True, False, True]


def test_graph_of_a_known_network():
    model, x = Known().eval(), images()
    graph = build_causal_graph(model, ["relu_a", "relu_b"], x, target=0)
    mean_x = x.mean(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(graph.effects["relu_a"].float(), torch.stack([2 * mean_x, 2 * mean_x, mean_x]))
    torch.testing.assert_close(graph.effects["relu_b"].float(), torch.stack([4 * mean_x, mean_x]))
    assert sorted(graph.nodes["relu_a"]) == [0, 1, 2] and graph.nodes["relu_b"] == [0, 1]
    edges = {(e[0], e[1], e[2], e[3]) for e in graph.edges}
    assert edges == {("relu_a", 0, "relu_b", 0), ("relu_a", 1, "relu_b", 0), ("relu_a", 2, "relu_b", 1)}
    path = {(e[1], e[3]): e[4] for e in graph.edges}
    assert path[(0, 0)] == pytest.approx(float(2 * mean_x), rel=1e-5)  # all of a0's effect runs through b0

    other = build_causal_graph(model, ["relu_a", "relu_b"], x, target=1)
    assert other.nodes == {"relu_a": [2], "relu_b": [1]}
    assert [(e[0], e[1], e[2], e[3]) for e in other.edges] == [("relu_a", 2, "relu_b", 1)]


def test_explanations_through_causal_filters():
    """Class 0 at relu_b: per-image weights 2 mean(b0) = 4 mean(x) and mean(b1) = mean(x), so the map is
    ReLU(4 mean(x) * 2x + mean(x) * x) = 9 mean(x) x; class 1: mean(x) * x from b1 alone."""
    model, x = Known().eval(), images()
    graphs = {t: build_causal_graph(model, ["relu_a", "relu_b"], x, target=t) for t in (0, 1)}
    explainer = CausalFilterExplainer(model, PatchGrid(4, 1), graphs)
    mean_x = x.mean(dim=(1, 2, 3)).view(-1, 1, 1)
    torch.testing.assert_close(explainer.attribute_grid(x, 0), 9 * mean_x * x[:, 0])
    torch.testing.assert_close(explainer.attribute_grid(x, 1), mean_x * x[:, 0])
    mixed = torch.tensor([0, 1] * 4)
    expected = torch.where(mixed.view(-1, 1, 1) == 0, 9 * mean_x * x[:, 0], mean_x * x[:, 0])
    torch.testing.assert_close(explainer.attribute(x, mixed), expected.flatten(1))
    at_a = CausalFilterExplainer(model, PatchGrid(4, 1), graphs, layer="relu_a").attribute_grid(x, 1)
    torch.testing.assert_close(at_a, mean_x * x[:, 0])  # a2 removed costs mean(x) of logit 1
    with pytest.raises(ValueError, match="no causal graph for class 1"):
        CausalFilterExplainer(model, PatchGrid(4, 1), {0: graphs[0]}).attribute(x, 1)


def test_plot_writes_a_figure(tmp_path):
    model, x = Known().eval(), images()
    graph = build_causal_graph(model, ["relu_a", "relu_b"], x, target=0)
    plot_causal_graph(graph, tmp_path / "graph.png")
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
