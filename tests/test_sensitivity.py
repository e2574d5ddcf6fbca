"""Sobol total indices and HSIC: the Ishigami function's known indices, designs, analytic toy games; the soft
(fractional) mask path of baseline filling."""

import math

import pytest
import torch
from torch import nn

from lit_xai.attribution import HSICAttribution, SobolAttribution
from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.players import FeatureGroups, PatchGrid, check_keep
from lit_xai.sensitivity import binary_design, hsic_scores, jansen_total_indices, sobol_design


def ishigami(points: torch.Tensor, a: float = 7.0, b: float = 0.1) -> torch.Tensor:
    x = -math.pi + 2 * math.pi * points  # U(-pi, pi)^3
    return (
        torch.sin(x[:, 0]) + a * torch.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * torch.sin(x[:, 0])
    ).unsqueeze(-1)


def test_sobol_total_indices_of_the_ishigami_function():
    # Analytic total indices for a = 7, b = 0.1 (Ishigami & Homma 1990; Saltelli et al. 2008):
    # V = a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2, ST_1 = (V_1 + V_13) / V, ST_2 = V_2 / V, ST_3 = V_13 / V.
    a, b = 7.0, 0.1
    v1 = 0.5 * (1 + b * math.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * math.pi**8 * (1 / 18 - 1 / 50)
    variance = v1 + v2 + v13
    expected = torch.tensor([(v1 + v13) / variance, v2 / variance, v13 / variance], dtype=torch.float64)
    n = 2**13
    indices = jansen_total_indices(ishigami(sobol_design(3, n)), n)[:, 0]
    torch.testing.assert_close(indices, expected, atol=0.01, rtol=0)
    # A scrambled sequence is another valid design.
    scrambled = jansen_total_indices(ishigami(sobol_design(3, n, scramble=True, seed=1)), n)[:, 0]
    torch.testing.assert_close(scrambled, expected, atol=0.01, rtol=0)


def test_sobol_design_layout():
    d, n = 4, 16
    design = sobol_design(d, n)
    assert design.shape == (n * (d + 2), d) and design.min() >= 0 and design.max() < 1
    a, b = design[:n], design[n : 2 * n]
    for i in range(d):
        c = design[(2 + i) * n : (3 + i) * n]
        others = [j for j in range(d) if j != i]
        assert torch.equal(c[:, i], b[:, i]) and torch.equal(c[:, others], a[:, others])


def test_jansen_of_additive_and_single_player_functions():
    d, n = 5, 2**12
    design = sobol_design(d, n)
    weights = torch.tensor([3.0, -2.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    # Additive with independent uniform inputs: the total index is the first-order one, w_i^2 / sum w^2.
    indices = jansen_total_indices((design @ weights).unsqueeze(-1), n)[:, 0]
    torch.testing.assert_close(indices, weights**2 / weights.pow(2).sum(), atol=0.005, rtol=0)
    assert indices[3] == 0  # a player the function ignores
    # A function of player 2 alone: the others' C_i rows equal A's outputs, so their indices are exactly zero.
    only = jansen_total_indices(torch.sin(6 * design[:, 2:3]), n)[:, 0]
    assert only[2] > 0.9 and (only[[0, 1, 3, 4]] == 0).all()
    # A constant output has no variance to share out.
    assert (jansen_total_indices(torch.ones(n * (d + 2), 2), n) == 0).all()


def test_hsic_of_one_player_and_of_an_additive_game():
    keep = binary_design(6, 64)
    assert keep.dtype == torch.bool and (keep.sum(0) == 32).all()  # every player kept in half of the designs
    # The output depends on player 0 alone: on the balanced design the others' presence is uncorrelated with it.
    scores = hsic_scores(keep, keep[:, :1].double())[:, 0]
    assert scores[0] > 0 and scores[1:].abs().max() < 1e-12
    weights = torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, -1.5], dtype=torch.float64)
    scores = hsic_scores(keep, (keep.double() @ weights).unsqueeze(-1))[:, 0]
    assert scores[[0, 1, 5, 2]].diff().lt(0).all()  # ordered by |weight|
    assert scores[[3, 4]].abs().max() < 1e-12
    batched = hsic_scores(keep, torch.stack([keep[:, :1].double(), keep[:, 1:2].double()]))
    assert batched.shape == (2, 6, 1) and batched[0, 0] > 0 and batched[1, 1] > 0


# ---------------------------------------------------------------------------------------------------------------
# Soft masks (baseline filling only) and the attributions
# ---------------------------------------------------------------------------------------------------------------


def test_soft_masks_blend_with_the_baseline():
    players = FeatureGroups(4, [[0, 1], [2], [3]])
    masker = BaselineFill(players, fill=2.0)
    model = nn.Identity()
    x = torch.tensor([[1.0, 3.0, 5.0, 7.0]])
    out = masker.fill_soft(model, x, torch.tensor([[0.25, 1.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.75, 2.25, 5.0, 2.0]]))
    binary = torch.tensor([[True, False, True]])
    torch.testing.assert_close(masker.fill_soft(model, x, binary), masker(model, x, binary))
    with pytest.raises(ValueError, match="fractional"):
        masker(model, x, torch.tensor([[0.5, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masker.fill_soft(model, x, torch.tensor([[1.5, 1.0, 0.0]]))
    grid = PatchGrid(4, 2)
    soft = grid.expand_mask(torch.tensor([[0.5, 0.0, 1.0, 0.25]]), soft=True)
    assert soft.shape == (1, 1, 4, 4) and soft[0, 0, 0, 0] == 0.5 and soft[0, 0, 3, 3] == 0.25
    assert check_keep(torch.tensor([[1, 0]]), 2, soft=True).dtype == torch.float32


def test_sobol_attribution_of_a_linear_model():
    """Soft masks make ``w.x`` additive in the masks: ``ST_i = c_i^2 / sum c^2`` with ``c = w (x - baseline)``."""
    torch.manual_seed(0)
    model, players = nn.Linear(5, 3).double().eval(), FeatureGroups(5)
    x, base = torch.randn(2, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    explainer = SobolAttribution(
        model, players, BaselineFill(players, fill=base), num_designs=1024, link="logits"
    )
    assert explainer.soft and explainer.masks().shape == (1024 * 7, 5)
    values = explainer.attribute(x, target=1)
    c = model.weight[1].detach() * (x - base)
    torch.testing.assert_close(values, c**2 / c.pow(2).sum(1, keepdim=True), atol=0.01, rtol=0)


def test_sobol_and_hsic_with_token_dropping_use_binary_masks():
    from test_attribution import make_case

    model, players, x, masker = make_case("vit")
    assert isinstance(masker, TokenDrop)
    sobol = SobolAttribution(model, players, masker, num_designs=8)
    assert not sobol.soft and sobol.masks().dtype == torch.bool
    assert sobol.attribute(x, target=1).shape == (3, players.num_players)
    with pytest.raises(ValueError, match="soft=False"):
        SobolAttribution(model, players, masker, soft=True)
    hsic = HSICAttribution(model, players, masker, num_designs=32)
    values = hsic.attribute_all(x)
    assert values.shape == (3, players.num_players, 5) and values.isfinite().all()


def test_hsic_attribution_finds_the_only_feature_that_matters():
    players = FeatureGroups(6)
    model = nn.Linear(6, 2).double().eval()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 4] = 2.0
    x = torch.ones(3, 6, dtype=torch.float64)
    values = HSICAttribution(model, players, BaselineFill(players), num_designs=64, link="logits").attribute(
        x, 0
    )
    assert (values[:, 4] > 0).all() and values[:, [0, 1, 2, 3, 5]].abs().max() < 1e-12
