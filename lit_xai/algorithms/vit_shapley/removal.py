"""Rebuild the players and masker a stage was trained with, from the plain settings stored in its checkpoint."""

from __future__ import annotations

from typing import Any

from torch import nn

from lit_xai.masking import Masker, build_masker
from lit_xai.players import FeatureGroups, PatchGrid, Players

__all__ = ["build_players", "build_stage_masker", "is_vit"]


def is_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens")


def build_players(
    model: nn.Module,
    patch_size: int | list[int] | None = None,
    image_size: int | list[int] | None = None,
    num_features: int | None = None,
) -> Players:
    """Players for ``model``'s inputs: the ViT's patch grid by default, a patch grid for CNNs, columns for tabular.

    Args:
        model: the network being explained.
        patch_size: player patch size in pixels (defaults to a ViT's own patch size).
        image_size: image size in pixels (defaults to a ViT's own image size; required for CNNs).
        num_features: number of columns, for tabular models (each column a player).
    """
    if num_features is not None:
        return FeatureGroups(num_features)
    if is_vit(model):
        image_size = image_size or tuple(model.patch_embed.img_size)
        patch_size = patch_size or tuple(model.patch_embed.patch_size)
    if image_size is None or patch_size is None:
        raise ValueError(
            f"cannot tell the players of a {type(model).__name__}: set image_size and patch_size (images) "
            f"or num_features (tabular)"
        )
    return PatchGrid(image_size, patch_size)


def build_stage_masker(
    model: nn.Module, players: Players, name: str = "auto", kwargs: dict[str, Any] | None = None
) -> Masker:
    """``name="auto"`` drops tokens for ViTs and fills with zeros otherwise."""
    if name == "auto":
        name = "token_drop" if is_vit(model) else "baseline"
    return build_masker(name, players, **(kwargs or {}))
