"""Rebuild the players and masker a stage was trained with, from the plain settings stored in its checkpoint."""

from __future__ import annotations

from typing import Any

from torch import nn

from lit_xai.masking import Masker, build_masker
from lit_xai.players import Players, is_vit, players_for

__all__ = ["build_players", "build_stage_masker"]


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
    return players_for(
        model=model,
        image_size=image_size,
        patch_size=patch_size,
        num_features=num_features,
        default_patch_size=None,
    )


def build_stage_masker(
    model: nn.Module, players: Players, name: str = "auto", kwargs: dict[str, Any] | None = None
) -> Masker:
    """``name="auto"`` drops tokens for ViTs and fills with zeros otherwise."""
    if name == "auto":
        name = "token_drop" if is_vit(model) else "baseline"
    return build_masker(name, players, **(kwargs or {}))
