"""Shap-CAM: class activation maps weighted by the channels' Shapley values (Zheng, Wang, Zhou & Lu, "Shap-CAM:
Visual Explanations for Convolutional Neural Networks based on Shapley Value", ECCV 2022).

The players are the channels of a feature layer (or groups of them); the game is the target score with the missing
channels removed at that layer (:class:`~lit_xai.channel_masking.ChannelMask`); each channel's weight is its
group's Shapley value ``phi``, and the map is ``cam = ReLU(sum_k phi_k A_k)`` on the feature grid, as GradCAM's but
with Shapley values where GradCAM has mean gradients.

Where our choices fill in or differ from the paper (which has no public code):

- the Shapley values are exact (enumeration of all ``2^d`` coalitions, :func:`~lit_xai.shapley.exact_shapley`) for
  at most ``exact_limit`` (16) players, and convergent KernelSHAP (:func:`~lit_xai.shapley.kernel_shap`) above;
  the paper estimates the same values by sampling permutations. Grouping channels (``num_groups``) keeps exact
  values affordable on wide layers; every channel of a group gets its group's value as weight;
- missing channels are set to zero by default (``fill="mean"`` with a mean is the alternative), and the score is the
  target logit by default (``link``), the scale GradCAM differentiates.

The layer is chosen as GradCAM's is (a name, or its default: ``features`` of our small CNN, the tokens entering a
ViT's last attention, whose embedding dimensions are then the channels). On a ViT, removing dimensions at that
default (``blocks[-1].norm1``) hides them from the last attention only, since the residual stream bypasses the norm;
name a block's output (``layer="blocks.<i>"``) to remove them from the stream itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.attribution._spatial import (
    grid_to_pixels,
    grid_to_players,
    require_patch_grid,
    token_grid,
    tokens_to_grid,
)
from lit_xai.attribution.base import Attribution, preserved_model_state, resolve_target
from lit_xai.attribution.gradcam import _default_layer
from lit_xai.channel_masking import ChannelGroups, ChannelMask
from lit_xai.games import ModelGame
from lit_xai.layers import layer_output, resolve_layer
from lit_xai.links import get_link
from lit_xai.players import Players, is_vit
from lit_xai.shapley import KernelShapResult, exact_shapley, kernel_shap

__all__ = ["ShapCAM"]


class ShapCAM(Attribution):
    """Shap-CAM over a CNN feature map or a ViT's patch tokens.

    Args:
        model: a CNN or a timm ViT (in eval mode: the channel game must be deterministic).
        players: a :class:`~lit_xai.players.PatchGrid` (the image's players the map is pooled to).
        layer: name of the feature layer; ``None`` picks GradCAM's default.
        num_groups: ``None`` (every channel is a player), an int (contiguous equal groups) or channel-index lists.
        fill: how missing channels are filled: ``"zeros"``, ``"mean"`` (with ``mean``), a number or a tensor.
        mean: per-channel (or per-element) mean for ``fill="mean"``.
        link: the score shared out: ``"logits"`` (default), ``"softmax"``, ``"log_softmax"`` or a callable.
        relu: keep only positive evidence (the paper's ReLU).
        exact_limit: largest number of players solved exactly; above it KernelSHAP runs.
        batch_size: masked inputs per forward pass.
        max_evaluations, threshold, seed: KernelSHAP's budget, stopping threshold and sampler seed.

    ``attribute`` returns ``(B, d)``: the CAM on the feature grid, averaged over the cells each image player covers
    (the cells themselves when the grids agree). ``attribute_grid`` gives the map ``(B, h, w)``,
    ``attribute_pixels`` the map upsampled bilinearly ``(B, H, W)``, ``attribute_channels`` the Shapley values of the
    channel players ``(B, num_channel_players)``. ``last_result`` keeps KernelSHAP's result when it ran.
    """

    name = "shap_cam"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        layer: str | None = None,
        num_groups: int | Sequence[Sequence[int]] | None = None,
        fill: str | float | Tensor = "zeros",
        mean: Sequence[float] | Tensor | None = None,
        link: str | Callable[[Tensor], Tensor] = "logits",
        relu: bool = True,
        exact_limit: int = 16,
        batch_size: int = 256,
        max_evaluations: int = 10_000,
        threshold: float | None = 0.01,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, players)
        self.players = require_patch_grid(players, "ShapCAM")
        if layer is None:
            module, layer = _default_layer(model)
            if module is None:
                raise ValueError(
                    f"ShapCAM removes channels of a named layer and found none on {type(model).__name__}: pass "
                    f"layer='<module name>' whose output is the feature map (B, C, h, w)"
                )
        elif not isinstance(layer, str):
            raise ValueError(f"layer must be a module name or None, got {type(layer).__name__}")
        self.layer_name = layer
        self.layer = resolve_layer(model, layer)
        if exact_limit < 1:
            raise ValueError(f"exact_limit must be at least 1, got {exact_limit}")
        self.num_groups, self.fill, self.mean = num_groups, fill, mean
        ChannelMask(
            ChannelGroups(1), layer, fill=fill, mean=mean
        )  # refuse a bad fill now, not at the first call
        self.link = get_link(link)
        self.relu, self.exact_limit, self.batch_size = bool(relu), int(exact_limit), int(batch_size)
        self.kernel_kwargs = dict(max_evaluations=int(max_evaluations), threshold=threshold)
        self.seed = seed
        self.last_result: KernelShapResult | None = None

    def __repr__(self) -> str:
        return f"ShapCAM(layer={self.layer_name!r}, players={self.players!r})"

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output (``(B, C, h, w)`` or ViT tokens) and the logits, from one forward pass."""
        with torch.no_grad(), layer_output(self.layer) as captured:
            logits = self.model(x)
        if "output" not in captured:
            raise ValueError(
                f"layer {self.layer_name!r} was not called in the model's forward pass; name another"
            )
        return captured["output"], logits

    def _grid(self, features: Tensor, x: Tensor) -> Tensor:
        if features.dim() == 4:
            return features
        if features.dim() == 3 and is_vit(self.model):
            return tokens_to_grid(features, int(self.model.num_prefix_tokens), token_grid(self.model, x))
        raise ValueError(
            f"ShapCAM needs a spatial feature map (B, C, h, w) or ViT tokens (B, N, D); layer {self.layer_name!r} "
            f"gives shape {tuple(features.shape)}"
        )

    def _channel_values(self, x: Tensor, target: Tensor, channels: ChannelGroups) -> Tensor:
        """Shapley values of the channel players for each input's target, ``(B, d)``."""
        masker = ChannelMask(channels, self.layer_name, fill=self.fill, mean=self.mean)
        game = ModelGame(self.model, masker, x, link=self.link, batch_size=self.batch_size, target=target)
        if channels.num_players <= self.exact_limit:
            return exact_shapley(game, channels.num_players)[..., 0]
        generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        self.last_result = kernel_shap(game, channels.num_players, generator=generator, **self.kernel_kwargs)
        return self.last_result.values[..., 0]

    def _explain(self, x: Tensor, target: Tensor | int | None) -> tuple[Tensor, Tensor]:
        """``(cam (B, h, w), channel-player values (B, d))``."""
        features, logits = self._features(x)
        target = resolve_target(target, x.shape[0], logits)
        channels = ChannelGroups(features.shape[-1 if features.dim() == 3 else 1], groups=self.num_groups)
        values = self._channel_values(x, target, channels)
        grid = self._grid(features, x)
        weights = channels.upsample(values).to(grid.dtype)  # (B, C): each channel gets its group's value
        cam = (weights[:, :, None, None] * grid).sum(dim=1)
        return (cam.clamp_min(0) if self.relu else cam), values

    def attribute_channels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Shapley values of the channel players, ``(B, d_channels)``."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._explain(x, target)[1]

    def attribute_grid(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map on the feature grid, ``(B, h, w)``."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._explain(x, target)[0]

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The map upsampled bilinearly to the image, ``(B, H, W)``."""
        return grid_to_pixels(self.attribute_grid(x, target), self.players.image_size, mode="bilinear")

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        return grid_to_players(self._explain(x, target)[0], self.players, reduce="mean")
