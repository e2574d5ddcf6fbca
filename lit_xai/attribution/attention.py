"""Attention-based explanations of timm ViTs: attention rollout and last-layer attention.

- Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): each block's
  head-fused attention ``A_l`` gets the residual connection, ``0.5 A_l + 0.5 I`` (rows renormalised), and the
  blocks are chained, ``R = A_L ... A_1``. The class token's row of ``R``, restricted to the patch tokens, says how
  much of each patch flowed into the class token.
- Last-layer attention: the class token's attention to the patches in the last block, head-averaged.

timm computes attention with fused ``scaled_dot_product_attention``, which never materialises the weights, so they
are recomputed from each block's input: a forward pre-hook on ``blk.attn`` applies its ``qkv`` projection,
``q_norm``/``k_norm`` and scale, then the softmax. Both methods are class-agnostic: ``target`` is accepted for
the common interface and ignored. They need a class token (``model.cls_token``); prefix tokens (class and register
tokens) are not patches and are left out of the map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution._spatial import (
    grid_to_pixels,
    grid_to_players,
    require_patch_grid,
    token_grid,
)
from lit_xai.attribution.base import Attribution, preserved_model_state
from lit_xai.players import Players, is_vit

__all__ = ["AttentionRollout", "LastLayerAttention", "capture_attention", "HEAD_FUSIONS"]

HEAD_FUSIONS = ("mean", "max", "min")


def _check_attention_vit(model: nn.Module, method: str) -> None:
    if not is_vit(model):
        raise ValueError(
            f"{method} needs a timm VisionTransformer (blocks with attention), got {type(model).__name__}; "
            f"use 'gradcam' or 'integrated_gradients' for other models"
        )
    if getattr(model, "cls_token", None) is None:
        raise ValueError(
            f"{method} reads the class token's attention, but this ViT has no class token (class_token=False); "
            f"use 'gradcam', 'integrated_gradients' or a perturbation method such as 'kernel_shap' instead"
        )
    for i, block in enumerate(model.blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(getattr(attn, "qkv", None), nn.Linear) or not hasattr(attn, "num_heads"):
            raise ValueError(
                f"{method}: block {i} has no timm Attention with a fused qkv projection (blk.attn.qkv), so its "
                f"attention weights cannot be recomputed; this ViT variant is not supported"
            )


def _attention_weights(attn: nn.Module, tokens: Tensor) -> Tensor:
    """Softmax attention ``(B, heads, N, N)`` of a timm ``Attention`` on its input tokens ``(B, N, D)``."""
    batch, length, _ = tokens.shape
    heads = int(attn.num_heads)
    qkv = attn.qkv(tokens)
    head_dim = qkv.shape[-1] // (3 * heads)
    qkv = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    scale = float(getattr(attn, "scale", head_dim**-0.5))
    return ((q.float() * scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)


def capture_attention(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Attention weights of every block of a timm ViT on ``x``: a list of ``(B, heads, N, N)`` tensors."""
    maps: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = args[0] if args else kwargs["x"]
        maps.append(_attention_weights(module, tokens))

    handles = [block.attn.register_forward_pre_hook(hook, with_kwargs=True) for block in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return maps


def _fuse_heads(weights: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    return weights.amax(dim=1) if head_fusion == "max" else weights.amin(dim=1)


class _ClassTokenAttention(Attribution):
    """Shared plumbing: a class-token-to-patch map on the token grid, then to players and pixels."""

    def __init__(self, model: nn.Module, players: Players, head_fusion: str = "mean") -> None:
        super().__init__(model, players)
        _check_attention_vit(model, type(self).__name__)
        self.players = require_patch_grid(players, type(self).__name__)
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"unknown head_fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")
        self.head_fusion = head_fusion

    def _class_row(self, maps: list[Tensor]) -> Tensor:
        """The class token's row over all tokens, ``(B, N)``."""
        raise NotImplementedError

    def _token_map(self, x: Tensor) -> Tensor:
        row = self._class_row(capture_attention(self.model, x))
        # timm puts the class token first, then any register tokens, then the patches.
        patches = row[:, int(self.model.num_prefix_tokens) :]
        gh, gw = token_grid(self.model, x)
        return patches.reshape(x.shape[0], gh, gw).to(x.dtype)

    def attribute_grid(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The class token's attention to each patch token, ``(B, gh, gw)`` on the model's token grid."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._token_map(x)

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The token map repeated over each token's pixels, ``(B, H, W)``."""
        return grid_to_pixels(self.attribute_grid(x, target), self.players.image_size, mode="nearest")

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        # Attention is a mass: a player covering several tokens receives their sum.
        return grid_to_players(self._token_map(x), self.players, reduce="sum")


class AttentionRollout(_ClassTokenAttention):
    """Attention rollout: attention chained through the blocks with the residual connection.

    Args:
        model: a timm ViT with a class token.
        players: a :class:`~lit_xai.players.PatchGrid`.
        head_fusion: how heads are combined per block: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
    """

    name = "attention_rollout"

    def _class_row(self, maps: list[Tensor]) -> Tensor:
        rollout = None
        for weights in maps:
            fused = _fuse_heads(weights, self.head_fusion)
            eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
            # The residual stream carries half of each token's update; renormalising matters only for max/min
            # fusion, whose rows need not sum to one.
            step = 0.5 * fused + 0.5 * eye
            step = step / step.sum(dim=-1, keepdim=True)
            rollout = step if rollout is None else step @ rollout
        return rollout[:, 0]


class LastLayerAttention(_ClassTokenAttention):
    """The class token's attention to the patches in the last block (heads fused, by default averaged)."""

    name = "last_layer_attention"

    def _class_row(self, maps: list[Tensor]) -> Tensor:
        return _fuse_heads(maps[-1], self.head_fusion)[:, 0]
