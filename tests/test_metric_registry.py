"""One metric registry and one ground-truth rule (issue 14, item 3): the ExplanationQuality callback, evaluate.py
and the ViT Shapley comparison must build the same metrics and the same Shapley ground truth for the same model.
Before, sensitivity-n removed 8/16/32 of 64 players in the callback and 6/16/32 in evaluate.py, and ground truth was
exact up to 20 players in two places and exact up to 16 (else none) in the third."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lit_xai.algorithms.vit_shapley.evaluation import ground_truth_shapley
from lit_xai.callbacks import ExplanationQuality
from lit_xai.evaluation.config import resolve_ground_truth
from lit_xai.evaluation.module import EvaluationModule
from lit_xai.masking import build_masker
from lit_xai.players import FeatureGroups, PatchGrid


def callback_metric(name: str, masker, players):
    callback = ExplanationQuality([name], method="gradient")
    size = tuple(players.image_size)
    callback.batch = {"input": torch.zeros(2, 1, *size), "annotation": torch.zeros(2, *size)}
    setup = SimpleNamespace(masker=masker, players=players, network=nn.Identity())
    return callback._build_metric(name, setup, nn.Module())


def evaluation_metric(name: str, masker, players):
    evaluation = SimpleNamespace(
        scorer=SimpleNamespace(masker=masker, players=players), model_batch_size=64, seed=0
    )
    return EvaluationModule._build_metric(evaluation, name, {})


@pytest.mark.parametrize("grid", [(8, 2), (16, 2), (224, 16)])  # 16, 64 and 196 players
def test_callback_and_evaluate_use_the_same_metric_defaults(grid):
    players = PatchGrid(*grid)
    masker = build_masker("baseline", players)
    ours, theirs = (build("sensitivity_n", masker, players) for build in (callback_metric, evaluation_metric))
    assert ours.subset_sizes == theirs.subset_sizes
    if players.num_players == 64:
        assert ours.subset_sizes == [8, 16, 32]
    for name in ("eraser", "localization"):
        assert type(callback_metric(name, masker, players)) is type(evaluation_metric(name, masker, players))
    assert (
        callback_metric("eraser", masker, players).fractions
        == evaluation_metric("eraser", masker, players).fractions
    )


@pytest.mark.parametrize(("num_players", "expected"), [(16, "exact"), (17, "kernel"), (64, "kernel")])
def test_one_auto_rule_decides_exact_or_kernelshap(num_players, expected):
    callback = ExplanationQuality(["shapley_error"], method="self")
    callback.explain_setup = SimpleNamespace(players=FeatureGroups(num_players))
    callback._truth_options = {"estimator": "auto"}
    assert callback._estimator() == expected
    assert resolve_ground_truth("auto", num_players) == expected


class Linear(nn.Module):
    """A linear model: its exact Shapley values under zero filling are ``w * x`` (in logits)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d, 2, bias=False)

    def forward(self, x):
        return self.layer(x)


def test_callback_and_vit_comparison_compute_the_same_ground_truth():
    torch.manual_seed(0)
    d = 17  # above the exact rule's limit: both must run the same seeded KernelSHAP
    model, x, target = Linear(d).eval(), torch.randn(3, d), torch.tensor([0, 1, 0])
    masker = build_masker("baseline", FeatureGroups(d))
    net = SimpleNamespace(surrogate=model, masker=masker, link=lambda logits: logits, num_players=d)
    generator = torch.Generator().manual_seed(0)
    vit = ground_truth_shapley(net, x, target, generator=generator)
    callback = ExplanationQuality(["shapley_error"], method="self", seed=0)
    callback.explain_setup = SimpleNamespace(network=model, masker=masker, players=FeatureGroups(d))
    callback._truth_options = {"link": lambda logits: logits}
    ours = callback._compute_truth(x, target)
    assert torch.allclose(vit, ours, atol=1e-6)
    exact = model.layer.weight[target] * x
    assert torch.allclose(ours, exact, atol=0.05)
