"""Input-agnostic saliency (Akhtar & Jalwana, AAAI 2023) on models whose class evidence is planted: a linear model's
map follows its weight rows, and a CNN-free 'trigger' model's map finds the trigger patch."""

import pytest
import torch
from torch import nn

from lit_xai.attribution import build_attribution
from lit_xai.attribution.input_agnostic import InputAgnosticSaliency
from lit_xai.players import PatchGrid


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (classes, 1, H, W)

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.weight)


def cosine(a, b):
    return float((a.flatten() @ b.flatten()) / (a.norm() * b.norm()))


def test_two_classes_the_map_is_the_weight_difference():
    # Logits W x: the loss gradient of class 1 at any point is -(1 - p_1)(W_1 - W_0), so rho only ever moves along
    # W_1 - W_0 (points are not clipped, the l2 projection only rescales).
    torch.manual_seed(0)
    weight = torch.randn(2, 1, 4, 4)
    saliency = InputAgnosticSaliency(Linear(weight), PatchGrid(4, 1), steps=20, num_points=8)
    for label, other in ((1, 0), (0, 1)):
        rho = saliency.class_map(label, (1, 4, 4))
        assert cosine(rho, weight[label] - weight[other]) == pytest.approx(1.0, abs=1e-5)
        assert float(rho.abs().max()) == pytest.approx(1.0)  # scaled to [-1, 1]


def test_planted_class_patches_are_found_among_ten_classes():
    # Class k's evidence is one 2x2 patch of an 8x8 image (its own patch, the 16 patches in row-major order).
    weight = torch.zeros(10, 1, 8, 8)
    for k in range(10):
        r, c = divmod(k, 4)
        weight[k, 0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 3.0
    players = PatchGrid(8, 2)
    saliency = build_attribution("input_agnostic", Linear(weight), players, steps=30, num_points=16)
    x = torch.rand(10, 1, 8, 8)
    values = saliency.attribute(x, torch.arange(10))  # (B, d): each row its target's class map
    assert values.shape == (10, 16)
    assert values.argmax(1).tolist() == list(range(10))
    for k in range(10):  # the other classes' patches are pushed down, the unused patches stay at zero
        assert (values[k, [j for j in range(10) if j != k]] < 0).all()
        assert values[k, 10:].abs().max() < 1e-5
    # Input-agnostic: the inputs only give the shape; any batch gets the same class maps.
    torch.testing.assert_close(saliency.attribute(torch.zeros(10, 1, 8, 8), torch.arange(10)), values)


class Trigger(nn.Module):
    """Digits-like model with a backdoor: a bright 2x2 corner square forces class 7 whatever else is there."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        trigger = x[:, 0, 6:, 6:].mean((1, 2))
        logits = self.body(x)
        return logits + 20.0 * torch.relu(trigger - 0.5).unsqueeze(1) * nn.functional.one_hot(
            torch.tensor(7), 10
        ).to(x)


def test_the_trigger_patch_leads_the_backdoored_class_map():
    saliency = InputAgnosticSaliency(Trigger(), PatchGrid(8, 2), steps=60, num_points=16)
    values = saliency.attribute(torch.zeros(1, 1, 8, 8), 7)
    assert int(values.argmax()) == 15  # the bottom-right patch


def test_errors():
    with pytest.raises(ValueError, match="norm"):
        InputAgnosticSaliency(nn.Identity(), PatchGrid(4, 1), norm="l1")
    with pytest.raises(ValueError, match="positive"):
        InputAgnosticSaliency(nn.Identity(), PatchGrid(4, 1), steps=0)
