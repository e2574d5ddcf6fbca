"""Sanity checks for explanations (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency
Maps", NeurIPS 2018).

An explanation of a model must depend on the model. The checks destroy what the model learned and ask whether the
maps change:

- *cascading* randomisation re-initialises the layers one after another from the output down, keeping the earlier
  randomisations, and compares each step's maps with the trained model's;
- *independent* randomisation re-initialises one layer at a time, the others trained;
- *data* randomisation trains the same architecture on permuted labels (:func:`permuted_labels`), so that nothing
  relates inputs to labels, and compares the two models' maps.

A method whose maps stay similar (high rank correlation or SSIM) fails: it is not explaining the model. The layer
order is taken from the model itself: the order in which a forward pass calls the modules that own parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.metrics.functional.map_similarity import map_spearman, map_ssim

__all__ = [
    "parameter_layers",
    "randomize_layer",
    "map_similarities",
    "cascading_randomization",
    "independent_randomization",
    "permuted_labels",
]

#: ``explain(model, x, target) -> (B, d)``: the method under test, bound afresh to each randomised copy.
Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]


def parameter_layers(model: nn.Module, x: Tensor) -> list[str]:
    """Names of the modules that own parameters (not through children), in the order one forward pass on ``x`` first
    calls them, input side first. The root's own parameters (e.g. a ViT's position embedding) come first, as they
    enter at the input; parameterised modules the pass never calls are left out (they cannot affect the maps)."""
    owners = {
        name: module for name, module in model.named_modules() if any(True for _ in module.parameters(False))
    }
    order: list[str] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, _a, name=name: order.append(name) if name not in order else None
        )
        for name, module in owners.items()
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return order


def randomize_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``module``'s own parameters in place: with its ``reset_parameters`` (the layer's own
    initialiser, as Adebayo et al. re-initialise) under a seed drawn from ``generator``, or, for modules without
    one, with Gaussian values of the trained parameter's mean and standard deviation."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for parameter in module.parameters(recurse=False):
            std = float(parameter.std()) if parameter.numel() > 1 else 0.0
            parameter.normal_(float(parameter.mean()), std if std > 0 else 0.02)


def map_similarities(
    original: Tensor, maps: Tensor, grid: tuple[int, int] | None = None
) -> dict[str, Tensor]:
    """``spearman``, ``spearman_abs`` and, on a ``grid``, ``ssim`` between two batches of maps ``(B, d)``: ``(B,)``."""
    scores = {
        "spearman": map_spearman(original, maps),
        "spearman_abs": map_spearman(original, maps, absolute=True),
    }
    if grid is not None:
        scores["ssim"] = map_ssim(original, maps, grid, window=min(3, *grid))
    return scores


def cascading_randomization(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    explain: Explain,
    layers: Sequence[str] | None = None,
    grid: tuple[int, int] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Randomise the layers from the output down, cumulatively; after each, compare the maps with the trained ones.

    Args:
        model: the trained model (left unchanged: a copy is randomised).
        x: inputs ``(B, ...)``; target: ``(B,)`` the classes explained, the same at every step.
        explain: the method under test.
        layers: the layers, input side first (default :func:`parameter_layers`).
        grid: the players' ``(rows, cols)`` for SSIM.
        seed: seeds the re-initialisations.

    Returns:
        One entry per step, ``{"layer": name, "spearman": (B,), "spearman_abs": (B,)[, "ssim": (B,)]}``, the
        output layer first.
    """
    layers = list(parameter_layers(model, x) if layers is None else layers)
    original = explain(model, x, target).detach()
    randomised = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for name in reversed(layers):
        randomize_layer(randomised.get_submodule(name), generator)
        steps.append(
            {"layer": name, **map_similarities(original, explain(randomised, x, target).detach(), grid)}
        )
    return steps


def independent_randomization(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    explain: Explain,
    layers: Sequence[str] | None = None,
    grid: tuple[int, int] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Randomise one layer at a time (the others trained) and compare the maps with the trained model's; arguments
    and entries as :func:`cascading_randomization`, the output layer first."""
    layers = list(parameter_layers(model, x) if layers is None else layers)
    original = explain(model, x, target).detach()
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for name in reversed(layers):
        randomised = copy.deepcopy(model)
        randomize_layer(randomised.get_submodule(name), generator)
        steps.append(
            {"layer": name, **map_similarities(original, explain(randomised, x, target).detach(), grid)}
        )
    return steps


def permuted_labels(labels: Tensor, seed: int = 0) -> Tensor:
    """The labels in a random order (the data randomisation test: a model trained on them can only memorise)."""
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(labels.shape[0], generator=generator).to(labels.device)]
