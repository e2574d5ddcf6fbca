"""h-Shap on games whose hierarchical Shapley values are known: linear models over patches."""

import pytest
import torch
from torch import nn

from lit_xai.attribution import HShap
from lit_xai.masking import BaselineFill
from lit_xai.players import FeatureGroups, PatchGrid


def linear_image_model(grid: PatchGrid, weight: torch.Tensor) -> nn.Module:
    """``f(x) = Σ_i weight_i · (sum of patch i's pixels)`` for class 0, its negative for class 1."""
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(grid.image_size[0] * grid.image_size[1], 2, bias=False)
    ).double()
    with torch.no_grad():
        per_pixel = grid.upsample(weight.view(1, -1).double())[0].flatten()
        model[1].weight.copy_(torch.stack([per_pixel, -per_pixel]))
    return model.eval()


def test_one_level_is_the_exact_shapley_value_of_four_patches():
    grid = PatchGrid(4, 2)  # 2 x 2 patches: the root's children are the patches
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    explainer = HShap(linear_image_model(grid, weight), grid, BaselineFill(grid), link="logits")
    x = torch.ones(2, 1, 4, 4, dtype=torch.float64)
    values = explainer.attribute(x, target=0)
    torch.testing.assert_close(values, (4 * weight).double().expand(2, 4))  # 4 pixels of 1 per patch
    assert explainer.last_evaluations.tolist() == [16, 16]
    # Class 1 sees only negative contributions: nothing passes the threshold t = 0.
    assert (explainer.attribute(x, target=1) == 0).all()


def test_only_the_branch_that_matters_is_explored():
    grid = PatchGrid(8, 2)  # 4 x 4 patches, two levels
    weight = torch.zeros(16)
    weight[6] = 0.5  # row 1, column 2: in the top-right quadrant
    explainer = HShap(linear_image_model(grid, weight), grid, BaselineFill(grid), link="logits")
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    values = explainer.attribute(x, target=0)
    contribution = 0.5 * 4
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 6] = contribution * contribution  # product of the scores along the path: quadrant, then patch
    torch.testing.assert_close(values, expected)
    assert explainer.last_evaluations.tolist() == [32]  # the root and one quadrant, 16 coalitions each


def test_uneven_grid_and_relative_threshold():
    grid = PatchGrid(3, 1)  # 3 x 3: split into 2 + 1 rows and columns
    weight = torch.arange(1.0, 10.0)
    explainer = HShap(linear_image_model(grid, weight), grid, BaselineFill(grid), link="logits")
    values = explainer.attribute(torch.ones(1, 1, 3, 3, dtype=torch.float64), target=0)[0]
    # Level 1: quadrants {0,1,3,4}, {2,5}, {6,7}, {8} score their sums; level 2 splits them into single cells.
    sums = {(0, 1, 3, 4): 1 + 2 + 4 + 5, (2, 5): 3 + 6, (6, 7): 7 + 8}
    expected = torch.zeros(9, dtype=torch.float64)
    for cells, total in sums.items():
        for cell in cells:
            expected[cell] = total * weight[cell]
    expected[8] = 9.0
    torch.testing.assert_close(values, expected)
    # The 100th percentile keeps the best child of each level only: the bottom-left pair (15), then its cell 7.
    best = HShap(linear_image_model(grid, weight), grid, BaselineFill(grid), link="logits", percentile=100)
    values = best.attribute(torch.ones(1, 1, 3, 3, dtype=torch.float64), target=0)[0]
    assert values.nonzero().flatten().tolist() == [7] and float(values[7]) == 15 * 8
    assert best.last_evaluations.tolist() == [16 + 4]  # the root's 4 children, then a node of 2 children


def test_all_classes_and_errors():
    grid = PatchGrid(4, 2)
    explainer = HShap(linear_image_model(grid, torch.ones(4)), grid, BaselineFill(grid), link="logits")
    every = explainer.attribute_all(torch.ones(3, 1, 4, 4, dtype=torch.float64))
    assert every.shape == (3, 4, 2) and (every[..., 1] == 0).all() and (every[..., 0] > 0).all()
    with pytest.raises(ValueError, match="PatchGrid"):
        HShap(nn.Linear(3, 2), FeatureGroups(3), BaselineFill(FeatureGroups(3)))
    with pytest.raises(ValueError, match="masker=BaselineFill"):
        HShap(nn.Linear(3, 2), grid)
    with pytest.raises(ValueError, match="percentile"):
        HShap(nn.Linear(3, 2), grid, BaselineFill(grid), percentile=120)
