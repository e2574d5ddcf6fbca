"""Attribution baselines: one interface, shapes on three kinds of model, no side effects, seeds, clear errors."""

import pytest
import timm
import torch
from torch import nn

from lit_xai.attribution import (
    ATTRIBUTIONS,
    RISE,
    Banzhaf,
    GradientXInput,
    IntegratedGradients,
    KernelSHAP,
    LeverageSHAP,
    PermutationSHAP,
    PerturbationAttribution,
    RandomAttribution,
    SmoothGrad,
    build_attribution,
)
from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.models import MLP, SmallCNN
from lit_xai.players import FeatureGroups, PatchGrid

# Small settings so every method runs in well under a second.
FAST = {
    "input_agnostic": dict(steps=3, num_points=4),
    "integrated_gradients": dict(steps=8),
    "smoothgrad": dict(num_samples=4),
    "rise": dict(num_masks=64, batch_size=50),
    "kernel_shap": dict(num_coalitions=64, max_evaluations=130, threshold=None),
    "leverage_shap": dict(num_coalitions=64, max_evaluations=130),
    "permutation_shap": dict(max_evaluations=64),
    "beta_shapley": dict(max_evaluations=64),
    "banzhaf": dict(num_masks=64, batch_size=50),
    "weighted_shap": dict(max_evaluations=64),
    "sobol": dict(num_designs=8),
    "hsic": dict(num_designs=32),
    "leave_one_out": dict(batch_size=7),
    "shap_cam": dict(max_evaluations=130, threshold=None),
}
VIT_ONLY = {"attention_rollout", "last_layer_attention"}
IMAGE_ONLY = {"gradcam", "h_shap", "shap_cam"}
PIXEL_METHODS = {
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "gradcam",
    "shap_cam",
} | VIT_ONLY


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=5,
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        **kwargs,
    ).eval()


def make_case(kind: str):
    """(model, players, inputs, masker) for a tiny CNN, a tiny ViT or a tabular MLP."""
    torch.manual_seed(0)
    if kind == "cnn":
        model, players, x = SmallCNN(3, 4, channels=(4, 8)).eval(), PatchGrid(8, 2), torch.randn(3, 3, 8, 8)
    elif kind == "vit":
        model, players, x = tiny_vit(), PatchGrid(16, 4), torch.randn(3, 3, 16, 16)
    else:
        model, players, x = (
            MLP(6, 3, hidden=(8,)).eval(),
            FeatureGroups(6, [[0, 1], [2], [3, 4], [5]]),
            torch.randn(3, 6),
        )
    masker = TokenDrop(players) if kind == "vit" else BaselineFill(players)
    return model, players, x, masker


def applies(name: str, kind: str) -> bool:
    return not ((name in VIT_ONLY and kind != "vit") or (name in IMAGE_ONLY and kind == "mlp"))


CASES = [(name, kind) for name in ATTRIBUTIONS for kind in ("cnn", "vit", "mlp") if applies(name, kind)]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_shapes(name, kind):
    model, players, x, masker = make_case(kind)
    explainer = build_attribution(name, model, players, masker=masker, **FAST.get(name, {}))
    values = explainer.attribute(x, target=1)
    assert values.shape == (x.shape[0], players.num_players)
    assert values.dtype == x.dtype and torch.isfinite(values).all() and not values.requires_grad
    assert explainer(x).shape == values.shape  # target=None: the predicted class
    if name in PIXEL_METHODS:
        pixels = explainer.attribute_pixels(x, target=torch.tensor([0, 1, 2]))
        assert pixels.shape == ((x.shape[0], *players.image_size) if kind != "mlp" else x.shape)
    if isinstance(explainer, PerturbationAttribution):
        everything = explainer.attribute_all(x)
        assert everything.shape == (x.shape[0], players.num_players, model(x).shape[1])


@pytest.mark.parametrize("name", ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"])
def test_pixel_methods_pool_to_players(name):
    model, players, x, _ = make_case("cnn")
    explainer = build_attribution(name, model, players, **FAST.get(name, {}))
    pixels = explainer.attribute_pixels(x, target=2)
    torch.testing.assert_close(explainer.attribute(x, target=2), players.pool(pixels, reduce="sum"))


@pytest.mark.parametrize("kind", ["cnn", "vit", "mlp"])
def test_target_none_is_the_prediction(kind):
    model, players, x, masker = make_case(kind)
    predicted = model(x).argmax(-1)
    for name in ("gradient_x_input", "leave_one_out"):
        explainer = build_attribution(name, model, players, masker=masker, **FAST.get(name, {}))
        torch.testing.assert_close(explainer.attribute(x), explainer.attribute(x, target=predicted))


def _snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


@pytest.mark.filterwarnings("ignore:ModelGame got a model in training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "kind"), [c for c in CASES if c[1] != "mlp"])
def test_model_state_untouched(name, kind, training):
    """Mode flags, requires_grad flags, weights, batch-norm statistics and .grad are as they were."""
    model, players, x, masker = make_case(kind)
    model.train(training)
    if kind == "cnn":
        model.head[0].eval()  # a mixed-mode model must come back mixed
    first = next(model.parameters())
    first.requires_grad_(False)  # a partly frozen model must stay partly frozen
    before = _snapshot(model)
    explainer = build_attribution(name, model, players, masker=masker, **FAST.get(name, {}))
    explainer.attribute(x, target=0)
    if name in PIXEL_METHODS:
        explainer.attribute_pixels(x)
    after = _snapshot(model)
    assert after[0] == before[0] and after[1] == before[1]
    for key, value in before[2].items():
        assert torch.equal(value, after[2][key]), key
    assert all(p.grad is None for p in model.parameters())


def test_gradients_inside_no_grad_and_inference_mode():
    """Validation loops run under no_grad/inference_mode; gradient methods still work and agree."""
    model, players, x, _ = make_case("cnn")
    explainer = IntegratedGradients(model, players, steps=8)
    expected = explainer.attribute(x, target=1)
    with torch.no_grad():
        torch.testing.assert_close(explainer.attribute(x, target=1), expected)
    with torch.inference_mode():
        inference_x = x.clone()
        torch.testing.assert_close(explainer.attribute(inference_x, target=1), expected)


def test_create_graph_keeps_the_graph_for_training_losses():
    model, players, x, _ = make_case("mlp")
    detached = GradientXInput(model, players).attribute(x, target=0)
    assert not detached.requires_grad
    attached = GradientXInput(model, players, create_graph=True).attribute(x, target=0)
    torch.testing.assert_close(attached.detach(), detached)
    attached.square().sum().backward()
    # The gradient depends on both weight matrices (not on the biases: the network is piecewise linear).
    for weight in (model.net[1].weight, model.net[4].weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_gradient_abs_and_signed():
    model, players, x, _ = make_case("mlp")
    unsigned = build_attribution("gradient", model, players).attribute_pixels(x, 0)
    signed = build_attribution("gradient", model, players, abs=False).attribute_pixels(x, 0)
    torch.testing.assert_close(unsigned, signed.abs())
    assert (signed < 0).any()


# ----------------------------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda m, p, k, s: SmoothGrad(m, p, num_samples=6, seed=s),
        lambda m, p, k, s: RISE(m, p, k, num_masks=50, seed=s),
        lambda m, p, k, s: KernelSHAP(m, p, k, num_coalitions=32, max_evaluations=66, threshold=None, seed=s),
        lambda m, p, k, s: LeverageSHAP(m, p, k, num_coalitions=32, max_evaluations=66, seed=s),
        lambda m, p, k, s: PermutationSHAP(m, p, k, max_evaluations=66, seed=s),
        lambda m, p, k, s: Banzhaf(m, p, k, num_masks=50, seed=s),
    ],
    ids=["smoothgrad", "rise", "kernel_shap", "leverage_shap", "permutation_shap", "banzhaf"],
)
def test_seeded_methods_are_deterministic(make):
    model, players, x, masker = make_case("cnn")
    first = make(model, players, masker, 3).attribute(x, 1)
    explainer = make(model, players, masker, 3)
    torch.testing.assert_close(explainer.attribute(x, 1), first, rtol=0, atol=0)
    torch.testing.assert_close(explainer.attribute(x, 1), first, rtol=0, atol=0)  # repeated calls agree too
    assert not torch.equal(make(model, players, masker, 4).attribute(x, 1), first)


def test_random_is_seeded_per_explainer():
    model, players, x, _ = make_case("mlp")
    a, b = RandomAttribution(model, players, seed=5), RandomAttribution(model, players, seed=5)
    first = a.attribute(x)
    torch.testing.assert_close(b.attribute(x), first, rtol=0, atol=0)
    assert not torch.equal(a.attribute(x), first)  # the next batch gets fresh values
    assert ((first >= 0) & (first < 1)).all()
    assert not torch.equal(RandomAttribution(model, players, seed=6).attribute(x), first)


def test_rise_masks_respect_keep_probability():
    model, players, _, masker = make_case("cnn")
    masks = RISE(model, players, masker, num_masks=4000, keep_prob=0.3).sample_masks()
    assert masks.shape == (4000, players.num_players) and masks.dtype == torch.bool
    assert abs(masks.float().mean().item() - 0.3) < 0.02


# ----------------------------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------------------------


def test_unknown_name_lists_the_valid_ones():
    model, players, _, _ = make_case("mlp")
    with pytest.raises(ValueError, match="unknown attribution 'saliency'.*integrated_gradients.*kernel_shap"):
        build_attribution("saliency", model, players)


@pytest.mark.parametrize(
    "name",
    ["leave_one_out", "rise", "kernel_shap", "leverage_shap", "permutation_shap", "beta_shapley", "banzhaf"],
)
def test_perturbation_methods_need_a_masker(name):
    model, players, _, _ = make_case("mlp")
    with pytest.raises(ValueError, match="masker=BaselineFill"):
        build_attribution(name, model, players)
    with pytest.raises(ValueError, match="masker has 6 players but the explainer has 4"):
        build_attribution(name, model, players, masker=BaselineFill(FeatureGroups(6)))


def test_gradcam_on_an_mlp_is_refused():
    model, players, x, _ = make_case("mlp")
    with pytest.raises(ValueError, match="GradCAM needs a convolutional feature map"):
        build_attribution("gradcam", model, players)
    with pytest.raises(ValueError, match="spatial feature map"):
        build_attribution("gradcam", model, PatchGrid((2, 3), 1), layer="net.1").attribute(
            x.reshape(3, 1, 2, 3)
        )


def test_attention_methods_need_a_vit_with_a_class_token():
    model, players, _, _ = make_case("cnn")
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        build_attribution("attention_rollout", model, players)
    no_cls = tiny_vit(class_token=False, global_pool="avg")
    for name in ("attention_rollout", "last_layer_attention"):
        with pytest.raises(ValueError, match="no class token"):
            build_attribution(name, no_cls, PatchGrid(16, 4))


def test_bad_inputs_and_targets():
    model, players, x, _ = make_case("cnn")
    explainer = build_attribution("gradient", model, players)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, 8, 8\)"):
        explainer.attribute(torch.randn(2, 3, 9, 9))
    with pytest.raises(ValueError, match="NaN"):
        explainer.attribute(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        explainer.attribute(x, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside 0..3"):
        explainer.attribute(x, target=4)
    with pytest.raises(ValueError, match="integer class indices"):
        explainer.attribute(x, target=torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown integration method"):
        IntegratedGradients(model, players, method="simpson")
    with pytest.raises(ValueError, match="keep_prob"):
        RISE(model, players, BaselineFill(players), keep_prob=1.0)
