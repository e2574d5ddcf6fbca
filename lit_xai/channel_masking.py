"""Removing channels of a hidden layer: the masker of channel games.

:class:`ChannelMask` is a masker (``masker(model, x, keep) -> logits``, :mod:`lit_xai.masking`) whose players are
the channels of one named layer (:class:`ChannelGroups`, a :class:`~lit_xai.players.FeatureGroups` over channels): a forward hook replaces the missing
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
  outputs; players from :meth:`ChannelGroups.heads`.

The layer is looked up by name with the core's :func:`~lit_xai.layers.resolve_layer` (the lookup IBA uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_xai.layers import resolve_layer
from lit_xai.masking import Masker
from lit_xai.players import FeatureGroups

__all__ = ["ChannelGroups", "ChannelMask"]

POSITIONS = ("output", "input")


class ChannelGroups(FeatureGroups):
    """Players are the channels of a hidden layer, or disjoint groups of channels.

    The channels are those of the tensor :class:`~lit_xai.channel_masking.ChannelMask` hooks: the ``C`` maps of a CNN
    feature map ``(B, C, h, w)``, the ``D`` embedding dimensions of ViT tokens ``(B, N, D)``, or the concatenated
    heads entering a ViT attention's output projection (``D = heads x head_dim``; :meth:`heads`). Shap-CAM (Zheng
    et al., ECCV 2022) plays the game of a layer's channels; grouping them keeps exact Shapley values affordable.

    Masks and values live on the channels: :meth:`expand_mask` gives ``(B, C)``, :meth:`upsample` spreads a group's
    value to each of its channels, :meth:`pool` adds channel values per group. The model's input is whatever the
    model takes, so :meth:`check_input` only asks for a batch; the masker checks the layer's channels.

    Args:
        num_channels: channels ``C`` of the hooked tensor.
        groups: ``None`` (each channel is a player), an int ``d`` (``d`` contiguous groups of ``C / d`` channels,
            which must divide evenly), or a list of channel-index lists partitioning the channels.
    """

    def __init__(self, num_channels: int, groups: int | Sequence[Sequence[int]] | None = None) -> None:
        if isinstance(groups, int) and not isinstance(groups, bool):
            if groups <= 0 or num_channels <= 0 or num_channels % groups:
                raise ValueError(
                    f"cannot split {num_channels} channels into {groups} equal contiguous groups; choose a number "
                    f"of groups that divides the channels, or pass the groups as lists of channel indices"
                )
            size = num_channels // groups
            groups = [list(range(g * size, (g + 1) * size)) for g in range(groups)]
        super().__init__(num_channels, groups)

    @classmethod
    def heads(cls, attention: object) -> ChannelGroups:
        """One player per head of a timm ``Attention`` module (``num_heads`` and ``head_dim`` attributes).

        Hook the input of its output projection (``ChannelMask(players, "blocks.<i>.attn.proj", position="input")``),
        where timm concatenates the heads' outputs, head ``h`` in channels ``h * head_dim ... (h + 1) * head_dim - 1``.
        """
        num_heads, head_dim = getattr(attention, "num_heads", None), getattr(attention, "head_dim", None)
        if not isinstance(num_heads, int) or not isinstance(head_dim, int):
            raise ValueError(
                f"ChannelGroups.heads needs a timm attention module with num_heads and head_dim, got "
                f"{type(attention).__name__}; pass ChannelGroups(dim, groups=num_heads) instead"
            )
        return cls(num_heads * head_dim, groups=num_heads)

    @property
    def num_channels(self) -> int:
        return self.num_features

    def __repr__(self) -> str:
        return f"ChannelGroups(num_channels={self.num_channels}, num_players={self.num_players})"

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() == 0:
            raise ValueError(f"expected a batch of model inputs (B, ...), got {getattr(x, 'shape', type(x))}")

    def pool(self, values: Tensor, reduce: str = "sum") -> Tensor:
        """Per-channel values ``(B, C)`` -> per-player values ``(B, d)``."""
        if values.dim() != 2 or values.shape[1] != self.num_channels:
            raise ValueError(
                f"channel values must have shape (B, {self.num_channels}), got {tuple(values.shape)}"
            )
        return super().pool(values, reduce)


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
