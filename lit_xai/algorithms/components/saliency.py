"""What the saliency-based training stages share (saliency-guided training, VisFIS, RRR): per-player saliency from
an input gradient, and the masker that realises the removed players.

The gradients themselves come from :func:`lit_xai.attribution.gradients.input_gradient` and
:func:`~lit_xai.attribution.gradients.output_gradient`, the same helpers the gradient baselines use.
"""

from __future__ import annotations

from torch import Tensor

from lit_xai.masking import Masker, build_masker
from lit_xai.players import Players

__all__ = ["build_saliency_masker", "player_saliency"]


def player_saliency(gradient: Tensor, players: Players, signed: bool = False) -> Tensor:
    """Per-player saliency ``(B, d)`` from an input gradient: ``|∂f/∂x|`` (or the signed gradient) summed over
    each player's pixels and channels (or columns)."""
    values = gradient if signed else gradient.abs()
    return players.pool(values, reduce="sum")


def build_saliency_masker(
    players: Players, masker: str = "baseline", fill: str | float = "random", **masker_kwargs
) -> Masker:
    """The masker that realises removed players.

    Args:
        players: the players.
        masker: ``"baseline"`` (fill the removed players) or another name of :func:`lit_xai.masking.build_masker`
            (``"token_drop"``/``"attention_mask"`` drop a ViT's removed patches instead).
        fill: for ``"baseline"``: ``"random"`` (uniform within the sample's range, the paper's
            :class:`~lit_xai.masking.RandomRangeFill`), a number, or any :class:`~lit_xai.masking.BaselineFill`
            fill (``"zeros"``, ``"mean"``, ``"blur"``, ``"noise"``).
        masker_kwargs: extra arguments of the masker (e.g. ``mean`` for ``fill="mean"``).
    """
    if masker == "baseline":
        if fill == "random":
            return build_masker("random_range", players, **masker_kwargs)
        return build_masker("baseline", players, fill=fill, **masker_kwargs)
    return build_masker(masker, players, **masker_kwargs)
