"""Helpers shared by the methods that see a model's feature grid (GradCAM, attention): ViT tokens and grids."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.players import PatchGrid, Players, is_vit

__all__ = [
    "feature_grid",
    "token_grid",
    "tokens_to_grid",
    "grid_to_players",
    "grid_to_pixels",
    "require_patch_grid",
]


def require_patch_grid(players: Players, method: str) -> PatchGrid:
    if not isinstance(players, PatchGrid):
        raise ValueError(f"{method} explains images: build it with a PatchGrid of players, got {players!r}")
    return players


def token_grid(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """The ViT's patch-token grid ``(gh, gw)`` for input ``x`` (follows the image size when it is dynamic)."""
    embed = model.patch_embed
    if getattr(model, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
        return tuple(int(s) for s in embed.dynamic_feat_size(tuple(x.shape[-2:])))
    return tuple(int(s) for s in embed.grid_size)


def tokens_to_grid(tokens: Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> Tensor:
    """``(B, N, D)`` ViT tokens -> ``(B, D, gh, gw)`` patch features; the prefix tokens (class, registers) are dropped.

    timm puts every prefix token first (class token, then register tokens), with or without ``no_embed_class``.
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected ViT tokens of shape (B, N, D), got {tuple(tokens.shape)}")
    patches = tokens[:, num_prefix_tokens:]
    gh, gw = grid
    if patches.shape[1] != gh * gw:
        raise ValueError(
            f"{tokens.shape[1]} tokens minus {num_prefix_tokens} prefix tokens do not fill the {gh}x{gw} patch grid; "
            f"choose a layer whose output holds every patch token (e.g. blocks[-1].norm1)"
        )
    return patches.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)


def feature_grid(
    model: nn.Module, features: Tensor, x: Tensor, layer: str, from_channels_last: bool = False
) -> Tensor:
    """A layer's output as a grid of activation vectors ``(B, D, h, w)``: CNN maps as they are, ViT tokens without
    their prefix tokens on the patch grid, flat vectors ``(B, D)`` as a 1x1 grid.

    With ``from_channels_last`` a map comes as ``(B, h, w, D)`` (and ``D`` may be anything, e.g. one value per
    subspace). Used by relevant subspaces and the causal graph explainer.
    """
    if features.dim() == 4:
        return features.permute(0, 3, 1, 2) if from_channels_last else features
    if features.dim() == 3 and is_vit(model):
        return tokens_to_grid(features, int(model.num_prefix_tokens), token_grid(model, x))
    if features.dim() == 2:
        return features[:, :, None, None]
    raise ValueError(
        f"layer {layer!r} gives shape {tuple(features.shape)}; this method needs a feature map "
        f"(B, D, h, w), ViT tokens (B, N, D) or vectors (B, D)"
    )


def grid_to_pixels(values: Tensor, image_size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """``(B, h, w)`` map -> ``(B, H, W)`` by interpolation (``"nearest"`` keeps cells constant)."""
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(values.unsqueeze(1), size=tuple(image_size), mode=mode, **kwargs)[:, 0]


def grid_to_players(values: Tensor, players: PatchGrid, reduce: str = "mean") -> Tensor:
    """``(B, h, w)`` map over a feature grid -> ``(B, d)`` per player.

    When the grids are equal each cell is a player. When each player covers whole cells they are averaged
    (``"mean"``) or added (``"sum"``, for masses such as attention). Otherwise the map is interpolated to the image
    and pooled per player, with ``"sum"`` rescaled to the map's total.
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    (h, w), (gh, gw) = values.shape[-2:], players.grid_size
    if (h, w) == (gh, gw):
        return values.flatten(1)
    if h % gh == 0 and w % gw == 0:
        pooled = F.avg_pool2d(values.unsqueeze(1), kernel_size=(h // gh, w // gw)).flatten(1)
        return pooled * ((h // gh) * (w // gw)) if reduce == "sum" else pooled
    pooled = players.pool(grid_to_pixels(values, players.image_size), reduce="mean")
    return pooled * (h * w / players.num_players) if reduce == "sum" else pooled
