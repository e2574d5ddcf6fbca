"""Non-learned attribution baselines, all called as ``explainer.attribute(x, target) -> (B, d)`` per player.

Build one by name with :func:`build_attribution`::

    from lit_xai.attribution import build_attribution
    from lit_xai.masking import BaselineFill

    explainer = build_attribution("integrated_gradients", model, players, steps=32)
    values = explainer.attribute(x, target=y)            # (B, d)
    rise = build_attribution("rise", model, players, masker=BaselineFill(players), num_masks=1000)

Gradient methods (``gradient``, ``gradient_x_input``, ``integrated_gradients``, ``smoothgrad``) also give pixel
maps (``attribute_pixels``); GradCAM, Shap-CAM (channel Shapley values as CAM weights) and the attention methods give
their feature-grid maps (``attribute_grid``);
perturbation methods (``leave_one_out``, ``rise``, ``kernel_shap``, ``leverage_shap``, ``permutation_shap``,
``beta_shapley``, ``banzhaf``, ``weighted_shap``, ``sobol``, ``hsic``, ``h_shap``) need a masker and give every class at once
(``attribute_all -> (B, d, C)``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lit_xai.attribution.attention import AttentionRollout, LastLayerAttention
from lit_xai.attribution.banzhaf import Banzhaf
from lit_xai.attribution.base import Attribution, PixelAttribution
from lit_xai.attribution.beta_shapley import BetaShapley
from lit_xai.attribution.gradcam import GradCAM
from lit_xai.attribution.gradients import Gradient, GradientXInput, SmoothGrad
from lit_xai.attribution.h_shap import HShap
from lit_xai.attribution.hsic import HSICAttribution
from lit_xai.attribution.input_agnostic import InputAgnosticSaliency
from lit_xai.attribution.integrated_gradients import IntegratedGradients
from lit_xai.attribution.kernel_shap import KernelSHAP
from lit_xai.attribution.learned import LearnedAttribution
from lit_xai.attribution.leverage_shap import LeverageSHAP
from lit_xai.attribution.permutation_shap import PermutationSHAP
from lit_xai.attribution.perturbation import RISE, LeaveOneOut, PerturbationAttribution
from lit_xai.attribution.random_baseline import RandomAttribution
from lit_xai.attribution.shap_cam import ShapCAM
from lit_xai.attribution.sobol import SobolAttribution
from lit_xai.attribution.weighted_shap import WeightedSHAP
from lit_xai.players import Players
from lit_xai.registry import register

__all__ = [
    "ATTRIBUTIONS",
    "Attribution",
    "AttentionRollout",
    "Banzhaf",
    "BetaShapley",
    "GradCAM",
    "Gradient",
    "GradientXInput",
    "HSICAttribution",
    "HShap",
    "InputAgnosticSaliency",
    "IntegratedGradients",
    "KernelSHAP",
    "LastLayerAttention",
    "LeaveOneOut",
    "LeverageSHAP",
    "PermutationSHAP",
    "PerturbationAttribution",
    "PixelAttribution",
    "RISE",
    "RandomAttribution",
    "ShapCAM",
    "SmoothGrad",
    "SobolAttribution",
    "WeightedSHAP",
    "LearnedAttribution",
    "build_attribution",
    "register_attribution",
]

ATTRIBUTIONS: dict[str, type[Attribution]] = {
    cls.name: cls
    for cls in (
        Gradient,
        GradientXInput,
        IntegratedGradients,
        SmoothGrad,
        GradCAM,
        ShapCAM,
        AttentionRollout,
        LastLayerAttention,
        LeaveOneOut,
        RISE,
        KernelSHAP,
        LeverageSHAP,
        PermutationSHAP,
        BetaShapley,
        Banzhaf,
        WeightedSHAP,
        SobolAttribution,
        HSICAttribution,
        HShap,
        InputAgnosticSaliency,
        RandomAttribution,
    )
}


def register_attribution(cls: type[Attribution]) -> type[Attribution]:
    """Class decorator: make an :class:`Attribution` subclass a baseline known by its ``name`` to
    :func:`build_attribution`, ``evaluate.py`` (``baselines``, ``baseline_kwargs``), the explanation callbacks and
    ``lit_xai.explain``. Its constructor takes ``(model, players, **options)``, plus ``masker`` for a
    :class:`PerturbationAttribution`. A trained explainer joins the same way through :class:`LearnedAttribution`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Attribution)):
        raise ValueError(f"register_attribution needs an Attribution subclass, got {cls!r}")
    return register(ATTRIBUTIONS, "baseline", cls.name, cls)


def build_attribution(
    name: str, model: nn.Module, players: Players, masker: Callable | None = None, **kwargs
) -> Attribution:
    """Build an attribution baseline by name.

    Args:
        name: one of ``gradient``, ``gradient_x_input``, ``integrated_gradients``, ``smoothgrad``, ``gradcam``, ``shap_cam``,
            ``attention_rollout``, ``last_layer_attention``, ``leave_one_out``, ``rise``, ``kernel_shap``,
            ``leverage_shap``, ``permutation_shap``, ``beta_shapley``, ``banzhaf``, ``weighted_shap``, ``sobol``, ``hsic``, ``h_shap``, ``random``.
        model: the network to explain.
        players: the players of the input.
        masker: how players are removed; required by the perturbation methods and ignored
            by the other methods (so one call can build every method in a loop).
        **kwargs: options of the method's class (e.g. ``steps`` for integrated gradients).

    Example:
        >>> import torch
        >>> from lit_xai.masking import BaselineFill
        >>> from lit_xai.players import FeatureGroups
        >>> model, players = nn.Linear(3, 2, bias=False), FeatureGroups(3)
        >>> loo = build_attribution("leave_one_out", model, players, masker=BaselineFill(players), link="logits")
        >>> torch.allclose(loo.attribute(torch.ones(1, 3), target=0), model.weight[:1])  # w * (x - 0) per column
        True
    """
    if name not in ATTRIBUTIONS:
        raise ValueError(f"unknown attribution {name!r}; choose one of {', '.join(ATTRIBUTIONS)}")
    cls = ATTRIBUTIONS[name]
    if issubclass(cls, PerturbationAttribution):
        return cls(model, players, masker=masker, **kwargs)
    return cls(model, players, **kwargs)
