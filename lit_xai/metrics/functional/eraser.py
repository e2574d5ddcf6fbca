"""ERASER sufficiency and comprehensiveness (DeYoung et al., "ERASER: A benchmark to evaluate rationalized NLP
models", ACL 2020), at player level.

For the top ``k%`` of players by attribution (the "rationale"):

- **comprehensiveness** ``= p(x)_y - p(x without the rationale)_y``: high when removing the rationale hurts;
- **sufficiency** ``= p(x)_y - p(only the rationale)_y``: low when the rationale alone keeps the prediction.

Both are reported per fraction and averaged over the fractions (the paper's AOPC-style aggregate over bins).
Saliency-guided training (Ismail et al., NeurIPS 2021) reports them for its explanations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.functional._utils import check_attributions, check_target, coalition_values, rank_players

__all__ = ["eraser", "rationale_sizes"]


def rationale_sizes(fractions: Sequence[float], num_players: int) -> list[int]:
    """Players in each rationale: ``round(f * d)`` (halves rounded up), at least one."""
    fractions = list(fractions)
    if not fractions or any(isinstance(f, bool) or not 0.0 < float(f) <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1], got {fractions!r}")
    return [max(1, math.floor(float(f) * num_players + 0.5)) for f in fractions]


def eraser(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    attributions: Tensor,
    target: Tensor | int,
    fractions: Sequence[float] = (0.1, 0.25, 0.5),
    link: str | Callable[[Tensor], Tensor] = "softmax",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Sufficiency and comprehensiveness of the top-``k%`` players.

    Args:
        model: the network being explained.
        masker: removes players, ``masker(model, x, keep) -> logits``.
        x: inputs ``(B, C, H, W)`` or ``(B, F)``.
        attributions: ``(B, d)`` per-player attributions for ``target``.
        target: ``(B,)`` class indices (or one int for all).
        fractions: rationale sizes as fractions of the players (``round(f * d)`` players, at least one).
        link: applied to the logits (``"softmax"``: probabilities, as in ERASER).
        batch_size: masked inputs per forward pass.
        generator: random source for breaking ties between equal attributions.

    Returns:
        A dict with ``sufficiency`` and ``comprehensiveness`` ``(B,)`` (means over the fractions) and
        ``sufficiency_per_fraction``, ``comprehensiveness_per_fraction`` ``(B, len(fractions))``.
    """
    num_players = masker.num_players
    batch = x.shape[0]
    sizes = rationale_sizes(fractions, num_players)
    attributions = check_attributions(attributions, num_players, batch).to(x.device)
    target = check_target(target, batch, x.device)

    rank = rank_players(attributions, generator)
    counts = torch.tensor(sizes, device=x.device)
    rationale = rank.unsqueeze(1) < counts.view(1, -1, 1)  # (B, F, d)
    full = torch.ones(batch, 1, num_players, dtype=torch.bool, device=x.device)
    # Per image: the full input, then "only the rationale" for each fraction, then "without the rationale".
    keep = torch.cat([full, rationale, ~rationale], dim=1)
    rows_per_image = keep.shape[1]
    image_index = torch.arange(batch, device=x.device).repeat_interleave(rows_per_image)
    values = coalition_values(
        model, masker, x, keep.flatten(0, 1), image_index, target, link=link, batch_size=batch_size
    ).view(batch, rows_per_image)

    num_fractions = len(sizes)
    original = values[:, :1]
    sufficiency = original - values[:, 1 : 1 + num_fractions]
    comprehensiveness = original - values[:, 1 + num_fractions :]
    return {
        "sufficiency": sufficiency.mean(dim=1),
        "comprehensiveness": comprehensiveness.mean(dim=1),
        "sufficiency_per_fraction": sufficiency,
        "comprehensiveness_per_fraction": comprehensiveness,
    }
