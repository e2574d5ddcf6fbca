"""GradCAM for CNNs and ViTs (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017).

``cam = ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``d f_c / d A_k`` over a feature map ``A``.

Where the feature map comes from:

- a layer you name (``layer="features"`` or a module), whose output is ``(B, C, h, w)`` or ViT tokens ``(B, N, D)``;
- timm ViTs: the tokens entering the last block's attention (``blocks[-1].norm1``). The last block's *output*
  would not do: with class-token pooling only the class token reaches the head, so the patch tokens' gradients are
  zero there. The prefix tokens (class and register tokens, ``model.num_prefix_tokens``) are dropped and the
  patch tokens reshaped to the patch grid;
- models with a ``features`` module (our :class:`~lit_xai.models.SmallCNN`: its last conv stage);
- other timm CNNs: the output of ``forward_features`` (the model is run as ``forward_head(forward_features(x))``).

The map is bilinearly upsampled for the pixel view; per player it is averaged over the cells a player covers (when
the feature grid equals the player grid, the per-token values are returned as they are).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution._spatial import (
    grid_to_pixels,
    grid_to_players,
    require_patch_grid,
    token_grid,
    tokens_to_grid,
)
from lit_xai.attribution.base import Attribution, preserved_model_state, resolve_target, select_target
from lit_xai.attribution.gradients import gradient_mode, prepare_input
from lit_xai.layers import resolve_layer
from lit_xai.links import get_link
from lit_xai.players import Players, is_vit

__all__ = ["GradCAM"]


def _default_layer(model: nn.Module) -> tuple[nn.Module | None, str]:
    """The feature source of a model: ``(module, description)``, or ``(None, "forward_features")``."""
    if is_vit(model):
        last = model.blocks[-1]
        if not isinstance(getattr(last, "norm1", None), nn.Module):
            raise ValueError(
                f"{type(model).__name__}'s last block has no norm1; name the layer whose tokens GradCAM should use "
                f"with layer='blocks.<i>.<module>'"
            )
        return last.norm1, f"blocks.{len(model.blocks) - 1}.norm1"
    if isinstance(getattr(model, "features", None), nn.Module):
        return model.features, "features"
    if callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None)):
        return None, "forward_features"
    raise ValueError(
        f"GradCAM needs a convolutional feature map or ViT tokens, and {type(model).__name__} has none that it "
        f"recognises (no ViT blocks, no 'features' module, no forward_features/forward_head). Pass layer='<module "
        f"name>' whose output is (B, C, h, w), or use 'gradient' or 'integrated_gradients' for this model"
    )


class GradCAM(Attribution):
    """GradCAM over a CNN feature map or a ViT's patch tokens.

    Args:
        model: a CNN or a timm ViT.
        players: a :class:`~lit_xai.players.PatchGrid`.
        layer: the module whose output is the feature map: a dotted name (``"blocks.3.norm1"``) or the module
            itself; ``None`` picks it as described in the module docstring.
        relu: keep only positive evidence (the paper's ReLU).
        link: the output differentiated: ``"logits"`` (default), ``"softmax"``, ``"log_softmax"`` or a callable.
        create_graph: keep the autograd graph so the map can be differentiated again.

    ``attribute`` returns ``(B, d)``; ``attribute_pixels`` the bilinearly upsampled map ``(B, H, W)``;
    ``attribute_grid`` the map on the feature grid ``(B, h, w)``.
    """

    name = "gradcam"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        layer: str | nn.Module | None = None,
        relu: bool = True,
        link: str | Callable[[Tensor], Tensor] = "logits",
        create_graph: bool = False,
    ) -> None:
        super().__init__(model, players)
        if layer is None:
            self.layer, self.layer_name = _default_layer(model)
        elif isinstance(layer, str):
            self.layer, self.layer_name = resolve_layer(model, layer), layer
        elif isinstance(layer, nn.Module):
            self.layer, self.layer_name = layer, type(layer).__name__
        else:
            raise ValueError(f"layer must be a module name, a module or None, got {type(layer).__name__}")
        self.players = require_patch_grid(players, "GradCAM")
        self.relu = bool(relu)
        self.link = get_link(link)
        self.create_graph = bool(create_graph)

    def __repr__(self) -> str:
        return f"GradCAM(layer={self.layer_name!r}, players={self.players!r})"

    def _features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.layer is None:
            features = self.model.forward_features(x)
            return features, self.model.forward_head(features)
        captured: list = []
        handle = self.layer.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"layer {self.layer_name!r} was not called in the model's forward pass; name another layer"
            )
        if not isinstance(captured[-1], Tensor):
            raise ValueError(
                f"layer {self.layer_name!r} returns a {type(captured[-1]).__name__}, not a tensor"
            )
        return captured[-1], logits  # a module called more than once: its last call feeds the head

    def _feature_grid(self, features: Tensor, x: Tensor) -> Tensor:
        if features.dim() == 4:
            return features
        if features.dim() == 3 and is_vit(self.model):
            return tokens_to_grid(features, int(self.model.num_prefix_tokens), token_grid(self.model, x))
        raise ValueError(
            f"GradCAM needs a spatial feature map (B, C, h, w) or ViT tokens (B, N, D); layer {self.layer_name!r} "
            f"gives shape {tuple(features.shape)}. Name a convolutional layer, or use 'gradient' or "
            f"'integrated_gradients' for models without one (e.g. MLPs)"
        )

    def _cam(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            # The input requires grad so that the feature map is in the graph even when every parameter is frozen.
            inputs = prepare_input(x)
            features, logits = self._features_and_logits(inputs)
            target = resolve_target(target, x.shape[0], logits)
            score = select_target(self.link(logits), target).sum()
            (grads,) = torch.autograd.grad(score, features, create_graph=self.create_graph)
            features, grads = self._feature_grid(features, x), self._feature_grid(grads, x)
            cam = (grads.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)
            cam = cam.clamp_min(0) if self.relu else cam
            return cam if self.create_graph else cam.detach()

    def attribute_grid(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map on the feature grid, ``(B, h, w)``."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._cam(x, target)

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map upsampled bilinearly to the image, ``(B, H, W)``."""
        return grid_to_pixels(self.attribute_grid(x, target), self.players.image_size, mode="bilinear")

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        return grid_to_players(self._cam(x, target), self.players, reduce="mean")
