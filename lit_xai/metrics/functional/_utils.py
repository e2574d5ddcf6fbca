"""Helpers shared by the functional metrics: input checks, player ranking, batched coalition values, correlations.

Every removal-based metric (insertion/deletion, sensitivity-n, ERASER) reduces to the same computation: a list of
(image, keep-mask) rows whose target-class value ``link(masker(model, x, keep))[target]`` is needed. Building all the
rows first and evaluating them in fixed-size chunks keeps the accelerator busy whatever the number of images, masks
or steps, which is what makes these metrics cheap compared with per-image loops (Quantus, captum).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import preserved_model_state
from lit_xai.links import get_link
from lit_xai.masking import Masker

__all__ = [
    "check_attributions",
    "check_finite",
    "check_target",
    "flatten_maps",
    "rank_players",
    "coalition_values",
    "pearson",
    "rankdata",
    "spearman",
]


def check_attributions(attributions: Tensor, num_players: int, batch_size: int | None = None) -> Tensor:
    """Validate per-player attributions ``(B, d)`` and return them as a float tensor."""
    if not isinstance(attributions, Tensor):
        raise ValueError(
            f"attributions must be a torch.Tensor of shape (B, {num_players}), got {type(attributions)}"
        )
    if attributions.dim() != 2 or attributions.shape[1] != num_players:
        raise ValueError(
            f"attributions must have shape (B, {num_players}) (one value per player, for the target class), got "
            f"{tuple(attributions.shape)}; pool pixel maps to players first (players.pool)"
        )
    if batch_size is not None and attributions.shape[0] != batch_size:
        raise ValueError(
            f"attributions have {attributions.shape[0]} rows but the input batch has {batch_size}"
        )
    if not attributions.is_floating_point():
        attributions = attributions.float()
    check_finite(attributions, "attributions")
    return attributions.detach()


def check_finite(values: Tensor, name: str = "attributions", source: str = "the explainer") -> None:
    """Refuse NaN and infinite values: a metric would turn them into NaN scores or a meaningless ranking.

    (An inf attribution makes every correlation NaN and an argsort that ignores the other values; a NaN one sorts
    as the largest. Either way the score looks like a number but measures nothing.)
    """
    bad = int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
    if bad:
        raise ValueError(
            f"{name} hold {bad} NaN/inf value(s) of {values.numel()}; fix {source} before measuring it"
        )


def check_target(target: Tensor | int, batch_size: int, device: torch.device) -> Tensor:
    """Return the target classes as a long tensor ``(B,)`` (an int applies to every input)."""
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise ValueError(
            f"target must be a tensor of class indices (B,) or an int, got {type(target).__name__}"
        )
    target = torch.as_tensor(target, device=device)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.dim() == 0:
        target = target.expand(batch_size)
    if target.shape != (batch_size,):
        raise ValueError(
            f"target must have shape ({batch_size},) (one class per input), got {tuple(target.shape)}"
        )
    if target.numel() and int(target.min()) < 0:
        raise ValueError(f"target must hold non-negative class indices, got {target.tolist()}")
    return target.long()


def flatten_maps(values: Tensor, name: str) -> Tensor:
    """``(B, ...)`` maps (pixels or players) -> ``(B, n)``."""
    if not isinstance(values, Tensor) or values.dim() < 2:
        raise ValueError(
            f"{name} must be a tensor of shape (B, d) or (B, H, W), got {getattr(values, 'shape', values)}"
        )
    return values.detach().flatten(1)


def rank_players(attributions: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of every player by descending attribution: ``rank[b, i] = 0`` for image b's most important player.

    Ties are broken at random. The random tie-breaking keys are drawn once per call for all images (one key per
    player), so the ranking of an image depends only on its attributions and the generator's state, never on
    which other images share the batch: results do not change with the batch size or the number of processes.
    """
    batch, num_players = attributions.shape
    device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(num_players, generator=generator, device=device).to(attributions.device)
    # Visit players in a random order, then sort stably by attribution: equal values keep that random order.
    shuffle = keys.argsort().expand(batch, num_players)
    shuffled = attributions.gather(1, shuffle)
    order = shuffle.gather(1, shuffled.argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_players, device=order.device).expand(batch, num_players))
    return rank


def coalition_values(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    keep: Tensor,
    image_index: Tensor,
    target: Tensor,
    link: str | Callable[[Tensor], Tensor] = "softmax",
    batch_size: int = 256,
) -> Tensor:
    """Target-class values of many coalitions: ``link(masker(model, x[i], keep[r]))[target[i]]`` with ``i = image_index[r]``.

    Args:
        model: the network; ``masker(model, ...)`` returns logits ``(n, C)``.
        masker: how missing players are removed.
        x: the images (or tabular rows) ``(B, ...)``.
        keep: keep-masks ``(R, d)``, one per row.
        image_index: ``(R,)`` which input each row belongs to.
        target: ``(B,)`` the class to read for each input.
        link: applied to the logits before reading the target class.
        batch_size: number of masked inputs per forward pass.

    Returns:
        ``(R,)`` float tensor of values (computed without gradients; the model's mode and batch-norm statistics are
        left unchanged).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    link_fn = get_link(link)
    if keep.shape[0] == 0:  # an empty batch (e.g. the last shard under DDP): no rows, not an error
        return torch.zeros(0, device=x.device)
    values = []
    with torch.no_grad(), preserved_model_state(model):
        for rows in torch.arange(keep.shape[0], device=keep.device).split(batch_size):
            images = image_index[rows]
            out = link_fn(masker(model, x[images], keep[rows]))
            if not values and int(target[images].max()) >= out.shape[1]:
                raise ValueError(
                    f"target has class indices up to {int(target.max())} but the model gives {out.shape[1]} outputs"
                )
            values.append(out.gather(1, target[images].unsqueeze(1)).squeeze(1).float())
    return torch.cat(values)


def pearson(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Pearson correlation along ``dim``; 0 where either side is constant (no linear relation can be seen)."""
    a_centred = a - a.mean(dim=dim, keepdim=True)
    b_centred = b - b.mean(dim=dim, keepdim=True)
    norm_a = a_centred.norm(dim=dim)
    norm_b = b_centred.norm(dim=dim)
    # "Constant" is judged relative to the values' magnitude: round-off leaves a tiny spread around the mean.
    tolerance = torch.finfo(norm_a.dtype).eps * 8 * a.shape[dim] ** 0.5
    constant = (norm_a <= tolerance * a.abs().amax(dim=dim)) | (norm_b <= tolerance * b.abs().amax(dim=dim))
    denominator = torch.where(constant, torch.ones_like(norm_a), norm_a * norm_b)
    r = (a_centred * b_centred).sum(dim=dim) / denominator
    return torch.where(constant, torch.zeros_like(r), r.clamp(-1.0, 1.0))


def rankdata(values: Tensor) -> Tensor:
    """Ranks ``1..n`` along the last dimension, tied values sharing their average rank (as scipy's ``rankdata``)."""
    shape = values.shape
    flat = values.reshape(-1, shape[-1])
    rows, n = flat.shape
    ordered, order = flat.sort(dim=1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(dim=1) - 1  # id of each sorted entry's run of equal values
    position = torch.arange(n, device=values.device, dtype=torch.float64).expand(rows, n)
    total = torch.zeros(rows, n, dtype=torch.float64, device=values.device).scatter_add_(1, group, position)
    count = torch.zeros(rows, n, dtype=torch.float64, device=values.device).scatter_add_(
        1, group, torch.ones_like(position)
    )
    average = (total / count.clamp_min(1)).gather(1, group) + 1
    ranks = torch.empty_like(average).scatter_(1, order, average)
    return ranks.reshape(shape).to(values.dtype if values.is_floating_point() else torch.float64)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation along the last dimension (Pearson correlation of average ranks)."""
    return pearson(rankdata(a), rankdata(b))
