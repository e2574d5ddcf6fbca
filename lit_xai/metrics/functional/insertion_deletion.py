"""Insertion and deletion curves (Petsiuk, Das & Saenko, "RISE", BMVC 2018), at player level.

Players are ranked by attribution, most important first. The *insertion* curve starts from the input with no
players and adds them in that order; the *deletion* curve starts from the full input and removes them in that
order. Each point is the target-class value ``link(logits)[target]`` (the probability by default). A faithful
explanation makes the insertion curve rise early (high AUC) and the deletion curve fall early (low AUC).

Removing a player is the masker's job (:mod:`lit_xai.masking`), so the same metric measures a ViT with token
dropping, as ViT Shapley does (Covert, Kim & Lee, ICLR 2023: all ``d + 1`` masks, the surrogate as the model), a
CNN with baseline filling, or a tabular model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.functional._utils import check_attributions, check_target, coalition_values, rank_players

__all__ = ["insertion_deletion", "player_counts"]


def player_counts(
    num_players: int, num_steps: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """The numbers of players inserted (or deleted) at each point of the curves: ``(S + 1,)`` long, from 0 to ``d``.

    ``num_steps=None`` gives every count ``0..d``; otherwise ``S + 1`` counts evenly spaced in ``[0, d]``, rounded
    to the nearest integer (``S`` must be at most ``d`` so that no count repeats).
    """
    if num_steps is None:
        return torch.arange(num_players + 1, device=device)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= num_players:
        raise ValueError(
            f"num_steps must be an int in 1..{num_players} (the number of players), or None for every count; "
            f"got {num_steps!r}"
        )
    steps = torch.arange(num_steps + 1, device=device)
    # round(j * d / S) in integer arithmetic: no float rounding surprises at .5
    return (2 * steps * num_players + num_steps) // (2 * num_steps)


def insertion_deletion(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    attributions: Tensor,
    target: Tensor | int,
    num_steps: int | None = None,
    link: str | Callable[[Tensor], Tensor] = "softmax",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Insertion and deletion curves and their areas for a batch of explanations.

    Args:
        model: the network being explained (its mode is left as it is; call ``model.eval()`` for dropout-free
            curves).
        masker: removes players, ``masker(model, x, keep) -> logits``.
        x: inputs ``(B, C, H, W)`` or ``(B, F)``.
        attributions: ``(B, d)`` per-player attributions for ``target``.
        target: ``(B,)`` class indices (or one int for all).
        num_steps: ``None`` evaluates all ``d + 1`` player counts; an int ``S <= d`` evaluates ``S + 1`` evenly
            spaced counts.
        link: applied to the logits: ``"softmax"`` (probabilities), ``"logits"``, ``"log_softmax"``, ``"sigmoid"``
            or a callable.
        batch_size: masked inputs per forward pass; all masks of all images are evaluated in such chunks.
        generator: random source for breaking ties between equal attributions (seed it for reproducible results).

    Returns:
        A dict with

        - ``insertion_curve`` ``(B, S + 1)``: the value with the ``counts[j]`` top players kept, the rest removed;
        - ``deletion_curve`` ``(B, S + 1)``: the value with the ``counts[j]`` top players removed;
        - ``insertion_auc``, ``deletion_auc`` ``(B,)``: trapezoidal areas under the curves over the fraction of
          players ``counts / d`` in ``[0, 1]`` (i.e. the curves' trapezoidal means);
        - ``fractions`` ``(S + 1,)``: ``counts / d``, the curves' x-axis.
    """
    num_players = masker.num_players
    batch = x.shape[0]
    attributions = check_attributions(attributions, num_players, batch).to(x.device)
    target = check_target(target, batch, x.device)
    counts = player_counts(num_players, num_steps, device=x.device)
    num_points = counts.shape[0]

    rank = rank_players(attributions, generator)
    inserted = rank.unsqueeze(1) < counts.view(1, -1, 1)  # (B, S+1, d): the counts[j] top players are kept
    # Deleting the k top players keeps exactly the complement of inserting them. The two end points are shared
    # (deleting none = inserting all, and vice versa), so only the interior of the deletion curve is evaluated.
    deleted = ~inserted[:, 1:-1]
    keep = torch.cat([inserted.flatten(0, 1), deleted.flatten(0, 1)])
    images = torch.arange(batch, device=x.device)
    image_index = torch.cat([images.repeat_interleave(num_points), images.repeat_interleave(num_points - 2)])
    values = coalition_values(model, masker, x, keep, image_index, target, link=link, batch_size=batch_size)

    insertion = values[: batch * num_points].view(batch, num_points)
    interior = values[batch * num_points :].view(batch, num_points - 2)
    deletion = torch.cat([insertion[:, -1:], interior, insertion[:, :1]], dim=1)
    fractions = counts.to(insertion.dtype) / num_players
    return {
        "insertion_curve": insertion,
        "deletion_curve": deletion,
        "insertion_auc": torch.trapezoid(insertion, fractions, dim=1),
        "deletion_auc": torch.trapezoid(deletion, fractions, dim=1),
        "fractions": fractions,
    }
