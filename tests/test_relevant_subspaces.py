"""PRCA / DRSA: contexts are gradients, PRCA's closed form on a rank-two case, sub-maps that add up exactly."""

import pytest
import timm
import torch
from torch import nn

from lit_xai.algorithms.relevant_subspaces import (
    ActivationContext,
    RelevantSubspaces,
    collect_pairs,
    drsa,
    prca,
)
from lit_xai.algorithms.relevant_subspaces.subspaces import drsa_objective
from lit_xai.attribution import GradientXInput
from lit_xai.models import SmallCNN
from lit_xai.players import PatchGrid


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN(in_chans=1, num_classes=3, channels=(4, 6))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 4):
    return [{"input": x[i : i + size], "target": y[i : i + size]} for i in range(0, len(x), size)]


def test_contexts_are_gradients_of_the_score():
    """After the ReLU of an MLP the score is W2[t] . a + b: the context of every sample is W2[t]."""
    model = mlp()
    x, y = torch.randn(10, 5), torch.tensor([0, 1, 2, 1, 1, 0, 1, 2, 1, 0])
    pairs = collect_pairs(model, "1", batches(x, y))
    assert pairs.activations.shape == (10, 6) and pairs.num_images == 10
    with torch.no_grad():
        torch.testing.assert_close(pairs.activations, model[1](model[0](x)))
    torch.testing.assert_close(pairs.contexts, model[2].weight[y].detach())
    ones = collect_pairs(model, "1", batches(x, y), target=1)  # images labelled 1 only
    assert ones.num_images == 5
    torch.testing.assert_close(ones.contexts, model[2].weight[1].detach().expand(5, 6))
    capped = collect_pairs(model, "1", batches(x, y), max_pairs=6)
    assert capped.activations.shape == (6, 6) and capped.num_images == 6


def test_cnn_pairs_are_positions():
    """SmallCNN averages the feature map before a linear head: the context at each of the 4x4 positions is W[t]/16."""
    model, x = small_cnn(), torch.randn(3, 1, 8, 8)
    pairs = collect_pairs(model, "features", [{"input": x, "target": torch.tensor([2, 2, 0])}])
    assert pairs.activations.shape == (3 * 16, 6) and pairs.num_images == 3
    expected = (model.head[-1].weight[torch.tensor([2, 2, 0])] / 16).detach().repeat_interleave(16, dim=0)
    torch.testing.assert_close(pairs.contexts, expected)
    with torch.no_grad():
        features = model.features(model.stem(x))
    torch.testing.assert_close(pairs.activations, features.permute(0, 2, 3, 1).reshape(-1, 6))


def test_prca_closed_form_on_a_rank_two_matrix():
    """With a constant context w, S = (m w^T + w m^T)/2 (m the mean activation): its top eigenvector is
    (m/|m| + w/|w|) normalised, with eigenvalue (|m||w| + m.w)/2."""
    model = mlp()
    x = torch.randn(64, 5)
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    c = int(predicted.mode().values)
    pairs = collect_pairs(model, "1", [(x, predicted)], target=c)
    m, w = pairs.activations.double().mean(0), model[2].weight[c].detach().double()
    u = prca(pairs, num_subspaces=1)[:, 0, 0].double()
    direction = m / m.norm() + w / w.norm()
    assert torch.abs(u @ direction / direction.norm()) == pytest.approx(1.0, abs=1e-5)
    assert u @ pairs.cross_covariance() @ u == pytest.approx(float(m.norm() * w.norm() + m @ w) / 2, rel=1e-5)


def test_prca_basis_is_orthonormal_and_ordered():
    torch.manual_seed(1)
    a, c = torch.randn(200, 8), torch.randn(200, 8)
    pairs = ActivationContext(a, c, "toy", 200)
    basis = prca(pairs, num_subspaces=3, subspace_size=2)
    flat = basis.reshape(8, 6)
    torch.testing.assert_close(flat.T @ flat, torch.eye(6), atol=1e-5, rtol=0)
    gains = torch.diagonal(flat.double().T @ pairs.cross_covariance() @ flat.double())
    assert bool((gains[:-1] >= gains[1:] - 1e-9).all())  # most relevant directions first
    with pytest.raises(ValueError, match=r"K \* d' <= D = 8"):
        prca(pairs, num_subspaces=3, subspace_size=3)


@pytest.mark.parametrize(("num_subspaces", "subspace_size"), [(2, 2), (3, 2)])
def test_sub_maps_add_up_to_the_plain_explanation(num_subspaces, subspace_size):
    model, players = small_cnn(), PatchGrid(8, 2)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 3, (12,))
    explainer = RelevantSubspaces.fit_prca(
        model, players, "features", batches(x, y), num_subspaces, subspace_size
    )
    test, target = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    grid = explainer.attribute_grid(test, target)
    assert grid.shape == (3, num_subspaces + 1, 4, 4)
    with torch.no_grad():
        features = model.features(model.stem(test))
    plain_grid = (features * model.head[-1].weight[target][:, :, None, None] / 16).sum(1)
    torch.testing.assert_close(grid.sum(1), plain_grid, rtol=1e-5, atol=1e-6)
    plain = GradientXInput(model, players)
    pixels = explainer.attribute_pixels(test, target)
    assert pixels.shape == (3, num_subspaces + 1, 8, 8)
    torch.testing.assert_close(pixels.sum(1), plain.attribute_pixels(test, target), rtol=1e-5, atol=1e-6)
    values = explainer.attribute(test, target)
    assert values.shape == (3, num_subspaces + 1, 16)
    torch.testing.assert_close(values.sum(1), plain.attribute(test, target), rtol=1e-5, atol=1e-6)
    residual = grid[:, -1].abs().amax()
    if num_subspaces * subspace_size == 6:  # the subspaces span the layer: nothing is left over
        assert residual < 1e-6
    else:
        assert residual > 1e-4 and grid[:, :-1].abs().amax() > 1e-4


def test_vit_sub_maps_add_up_with_prefix_tokens():
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=16, patch_size=4, embed_dim=16,
        depth=2, num_heads=2,
    ).eval()  # fmt: skip
    players, x = PatchGrid(16, 4), torch.randn(4, 3, 16, 16)
    explainer = RelevantSubspaces.fit_prca(model, players, "blocks.0", [x], num_subspaces=2, subspace_size=4)
    pixels = explainer.attribute_pixels(x[:2], 1)
    torch.testing.assert_close(pixels.sum(1), GradientXInput(model, players).attribute_pixels(x[:2], 1))
    assert explainer.attribute_grid(x[:2], 1).shape == (2, 3, 4, 4)


def test_drsa_finds_planted_subspaces():
    """Half the samples have relevance along q1 only, half along q2 only (q a random rotation of the axes).
    DRSA with K = 2 one-dimensional subspaces must give each its own direction (up to sign and order)."""
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    n = 200
    scale = torch.rand(n, 1) + 0.5
    a = torch.cat([scale[: n // 2] * q[:, 0], scale[n // 2 :] * q[:, 1]])
    a = a + 0.01 * torch.randn(n, 5)
    pairs = ActivationContext(a, a.clone(), "toy", n)  # context = activation: relevance |a|^2 >= 0
    result = drsa(pairs, num_subspaces=2, steps=200, trials=3, seed=0)
    found = result.basis.reshape(5, 2)
    overlap = (found.T @ q[:, :2]).abs()  # (found, planted)
    assert overlap.max(dim=1).values.min() > 0.99
    assert set(overlap.argmax(dim=1).tolist()) == {0, 1}
    assert result.objective == pytest.approx(float(drsa_objective(result.basis, a, a, 2)), rel=1e-5)
    assert result.trials[0][-1] > result.trials[0][0]  # the ascent improved on its start


def test_save_load_and_refusals(tmp_path):
    model, players = small_cnn(), PatchGrid(8, 2)
    basis = torch.linalg.qr(torch.randn(6, 6))[0][:, :4].reshape(6, 2, 2)
    explainer = RelevantSubspaces(model, players, "features", basis)
    explainer.save(tmp_path / "basis.pt")
    loaded = RelevantSubspaces.load(tmp_path / "basis.pt", model, players)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.attribute(x, 0), explainer.attribute(x, 0))
    with pytest.raises(ValueError, match="orthonormal"):
        RelevantSubspaces(model, players, "features", 2 * basis)
    with pytest.raises(ValueError, match=r"has 4 channels but the basis has 6"):
        RelevantSubspaces(model, players, "stem.0", basis).attribute(x, 0)
    with pytest.raises(ValueError, match="no layer named"):
        RelevantSubspaces(model, players, "conv9", basis)
    with pytest.raises(ValueError, match="no labels"):
        collect_pairs(model, "features", [x], target=1)


def test_drsa_does_not_depend_on_the_scale_of_the_contexts():
    """J is homogeneous in the contexts: scaled contexts give the same basis and a scaled objective."""
    torch.manual_seed(2)
    a, c = torch.randn(300, 6).relu(), torch.randn(300, 6)
    c = c + a  # some positive relevance in every direction the activations take
    base = drsa(ActivationContext(a, c, "toy", 300), num_subspaces=2, subspace_size=2, steps=30, seed=1)
    small = drsa(
        ActivationContext(a, 1e-3 * c, "toy", 300), num_subspaces=2, subspace_size=2, steps=30, seed=1
    )
    torch.testing.assert_close(small.basis, base.basis, atol=1e-4, rtol=0)
    assert small.objective == pytest.approx(1e-3 * base.objective, rel=1e-4)
    assert base.trials[0][-1] > base.trials[0][0]
