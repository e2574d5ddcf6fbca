"""Removing channels of a hidden layer: the masker of channel games.

:class:`ChannelMask` is a masker (``masker(model, x, keep) -> logits``, :mod:`lit_xai.masking`) whose players are
the channels of one named layer (:class:`~lit_xai.players.ChannelGroups`): a forward hook replaces the missing
channels of that layer's output (or input) by a fill value for each row of the batch, and the model runs on from
there. Because it is an ordinary masker, :class:`~lit_xai.games.ModelGame`, the Shapley engine
(:func:`~lit_xai.shapley.exact_shapley`, :func:`~lit_xai.shapley.kernel_shap`) and every perturbation attribution
play channel games unchanged. Removing internal units rather than pixels is the game of Shap-CAM (Zheng et al.,
"Shap-CAM: Visual Explanations for Convolutional Neural Networks based on Shapley Value", ECCV 2022) and, more
generally, of explaining by removing inside a network (Covert, Lundberg & Lee, JMLR 2021).

Where the channels are:

- CNN feature maps ``(B, C, h, w)``: channel dimension 1;
- ViT tokens ``(B, N, D)`` (a block's output, or a norm inside it): the embedding dimension, last. Every token,
  class token included, loses the same dimensions;
- ViT heads: the input of ``blocks.<i>.attn.proj`` (``position="input"``), where timm concatenates the heads'
  outputs; players from :meth:`ChannelGroups.heads <lit_xai.players.ChannelGroups.heads>`.

The layer is looked up by name with the core's :func:`~lit_xai.layers.resolve_layer` (the lookup IBA uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_xai.layers import resolve_layer
from lit_xai.masking import Masker
from lit_xai.players import ChannelGroups

__all__ = ["ChannelMask"]

POSITIONS = ("output", "input")


class ChannelMask(Masker):
    """Replace the missing channels of a named layer by a fill: ``a * m + fill * (1 - m)``, per row.

    A kept channel passes through unchanged (multiplied by exactly 1), so with every player kept the model's
    output is bit-for-bit ``model(x)``.

    Args:
        players: the layer's channels and how they are grouped.
        layer: the layer's name in ``model.named_modules()`` (``"features"``, ``"layer4"``, ``"blocks.5"``,
            ``"blocks.5.attn.proj"``).
        fill: ``"zeros"``; ``"mean"`` (the given ``mean``: per channel ``(C,)``, or per element shaped like one
            sample's activation, e.g. ``estimate_layer_statistics(model, layer, data).mean`` from
            :mod:`lit_xai.algorithms.input_iba`); a number; or a tensor broadcastable to the activation.
        mean: the mean used by ``fill="mean"``.
        position: ``"output"`` (hook the layer's output) or ``"input"`` (its first positional input, e.g. the
            concatenated heads entering a ViT attention's ``proj``).
        channel_dim: where the channels are in the hooked tensor; ``None`` takes the last dimension of 3-D
            tensors (ViT tokens ``(B, N, D)``) and dimension 1 otherwise (``(B, C, h, w)``, ``(B, C)``). Pass
            ``channel_dim=1`` for 1-D convolutions ``(B, C, L)``.
    """

    #: Removing every channel of one layer does not make the output constant across inputs when paths bypass the
    #: layer (residual connections, ViT blocks): ``v(∅)`` is evaluated per input.
    constant_null = False

    def __init__(
        self,
        players: ChannelGroups,
        layer: str,
        fill: str | float | Tensor = "zeros",
        mean: Sequence[float] | Tensor | None = None,
        position: str = "output",
        channel_dim: int | None = None,
    ) -> None:
        if not isinstance(players, ChannelGroups):
            raise ValueError(
                f"ChannelMask removes channels of a layer: build it with ChannelGroups players, got {players!r}"
            )
        super().__init__(players)
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be the name of a module in model.named_modules(), got {layer!r}")
        if isinstance(fill, str) and fill not in ("zeros", "mean"):
            raise ValueError(f"unknown fill {fill!r}; choose 'zeros', 'mean', a number or a tensor")
        if fill == "mean" and mean is None:
            raise ValueError(
                "fill='mean' needs the mean to fill with: pass mean=<per-channel or per-element values>"
            )
        if position not in POSITIONS:
            raise ValueError(f"position must be 'output' or 'input', got {position!r}")
        self.layer, self.fill, self.position, self.channel_dim = layer, fill, position, channel_dim
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"ChannelMask({self.players!r}, layer={self.layer!r}, position={self.position!r})"

    def channel_axis(self, activation: Tensor) -> int:
        """The dimension of ``activation`` that holds the channels (``channel_dim``, or the default rule)."""
        if self.channel_dim is not None:
            return self.channel_dim % activation.dim()
        return activation.dim() - 1 if activation.dim() == 3 else 1

    def _fill(self, activation: Tensor, dim: int) -> Tensor:
        """The values of missing channels, broadcastable to ``activation``."""
        fill = self.fill
        if isinstance(fill, Tensor):
            return fill.to(activation)
        if not isinstance(fill, str):
            return torch.full_like(activation, float(fill))
        if fill == "zeros":
            return torch.zeros_like(activation)
        mean = self.mean.to(activation)
        if mean.dim() == 1 and mean.shape[0] == activation.shape[dim]:
            shape = [1] * activation.dim()
            shape[dim] = -1
            return mean.view(shape)
        if tuple(mean.shape) == tuple(activation.shape[1:]):
            return mean.unsqueeze(0)
        raise ValueError(
            f"the mean has shape {tuple(mean.shape)}, which is neither one value per channel "
            f"({activation.shape[dim]},) nor one sample's activation {tuple(activation.shape[1:])} at {self.layer!r}"
        )

    def mask_activation(self, activation: Tensor, keep: Tensor) -> Tensor:
        """The hooked tensor with the channels of missing players replaced: ``(B, ...)`` in, same shape out."""
        if not isinstance(activation, Tensor):
            raise ValueError(
                f"the {self.position} of layer {self.layer!r} is a {type(activation).__name__}, not a tensor; "
                f"hook a layer whose {self.position} is one feature tensor"
            )
        if activation.dim() < 2 or activation.shape[0] != keep.shape[0]:
            raise ValueError(
                f"the {self.position} of layer {self.layer!r} has shape {tuple(activation.shape)}, not one row per "
                f"input of the batch ({keep.shape[0]}); hook a layer that keeps the batch dimension first"
            )
        dim = self.channel_axis(activation)
        if activation.shape[dim] != self.players.num_channels:
            raise ValueError(
                f"the {self.position} of layer {self.layer!r} has {activation.shape[dim]} channels in dimension "
                f"{dim} (shape {tuple(activation.shape)}), but the players have {self.players.num_channels}; build "
                f"ChannelGroups({activation.shape[dim]}, ...) or set channel_dim"
            )
        shape = [activation.shape[0]] + [1] * (activation.dim() - 1)
        shape[dim] = -1
        m = self.players.expand_mask(keep).to(activation).view(shape)
        return activation * m + self._fill(activation, dim) * (1 - m)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        module = resolve_layer(model, self.layer)
        calls = []

        # A module run more than once per forward pass (shared weights) is masked at every call.
        def output_hook(module: nn.Module, args, output):
            calls.append(True)
            return self.mask_activation(output, keep)

        def input_hook(module: nn.Module, args):
            calls.append(True)
            if not args:
                raise ValueError(
                    f"layer {self.layer!r} got its input by keyword; hook its output or the module that feeds it"
                )
            return (self.mask_activation(args[0], keep), *args[1:])

        if self.position == "output":
            handle = module.register_forward_hook(output_hook)
        else:
            handle = module.register_forward_pre_hook(input_hook)
        try:
            logits = model(x)
        finally:
            handle.remove()
        if not calls:
            raise ValueError(
                f"layer {self.layer!r} was not called in the model's forward pass; choose another layer"
            )
        return logits
