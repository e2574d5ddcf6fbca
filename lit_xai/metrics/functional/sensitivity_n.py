"""Sensitivity-n (Ancona, Ceolini, Öztireli & Gross, "Towards better understanding of gradient-based attribution
methods for deep neural networks", ICLR 2018), at player level.

An attribution has sensitivity-n when, for every subset ``S`` of ``n`` players, the sum of the attributions in
``S`` equals the drop in output when ``S`` is removed: ``sum_{i in S} a_i = v(all) - v(all minus S)``. The metric
measures how close an explanation comes: for random subsets of size ``n`` it correlates the two sides across
subsets (Pearson, as in the paper; Spearman, as ViT Shapley's evaluation does, is an option). A linear model's exact
attributions have sensitivity-n for every ``n`` on the logit scale, so they score exactly 1.

The random subsets are drawn once per call and shared by every image of the batch, so an image's score depends
only on its own data and the generator's seed, not on how the dataset was split into batches or processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.functional._utils import (
    check_attributions,
    check_target,
    coalition_values,
    pearson,
    spearman,
)

__all__ = ["sensitivity_n", "check_subset_sizes"]

CORRELATIONS = ("pearson", "spearman")


def check_subset_sizes(subset_sizes: int | Sequence[int], num_players: int) -> list[int]:
    """Validate the subset sizes ``n`` (each in ``1..d-1``) and return them as a list."""
    sizes = [subset_sizes] if isinstance(subset_sizes, int) else list(subset_sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) for n in sizes):
        raise ValueError(f"subset_sizes must be an int or a non-empty list of ints, got {subset_sizes!r}")
    bad = [n for n in sizes if not 1 <= n <= num_players - 1]
    if bad:
        raise ValueError(
            f"subset sizes must lie in 1..{num_players - 1} (with all {num_players} players removed every subset is "
            f"the same and no correlation exists); got {bad}"
        )
    return sizes


def sensitivity_n(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    attributions: Tensor,
    target: Tensor | int,
    subset_sizes: int | Sequence[int],
    num_subsets: int = 100,
    link: str | Callable[[Tensor], Tensor] = "softmax",
    correlation: str = "pearson",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Correlation between attribution sums and output drops over random subsets of each size.

    Args:
        model: the network being explained.
        masker: removes players, ``masker(model, x, keep) -> logits``.
        x: inputs ``(B, C, H, W)`` or ``(B, F)``.
        attributions: ``(B, d)`` per-player attributions for ``target``.
        target: ``(B,)`` class indices (or one int for all).
        subset_sizes: the sizes ``n`` to test, each in ``1..d-1`` (an int or a list).
        num_subsets: random subsets per size (at least 2); the model is run ``B * (1 + K * num_subsets)`` times for
            ``K`` sizes.
        link: applied to the logits before reading the target class (``"softmax"``, ``"logits"``, ...).
        correlation: ``"pearson"`` (Ancona et al.) or ``"spearman"`` (ViT Shapley's evaluation).
        batch_size: masked inputs per forward pass.
        generator: random source for the subsets.

    Returns:
        ``(B, K)`` correlations in ``[-1, 1]``, one per image and size; 0 where either side does not vary across
        the subsets (e.g. an all-zero attribution), since no relation can be measured there.
    """
    if correlation not in CORRELATIONS:
        raise ValueError(f"unknown correlation {correlation!r}; choose one of {', '.join(CORRELATIONS)}")
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, int) or num_subsets < 2:
        raise ValueError(
            f"num_subsets must be an int of at least 2 (a correlation needs two points), got {num_subsets!r}"
        )
    num_players = masker.num_players
    batch = x.shape[0]
    sizes = check_subset_sizes(subset_sizes, num_players)
    attributions = check_attributions(attributions, num_players, batch).to(x.device)
    target = check_target(target, batch, x.device)

    # Uniform subsets of each size: rank players by uniform noise and take the n smallest ranks.
    noise_device = generator.device if generator is not None else torch.device("cpu")
    subsets = torch.stack(
        [
            torch.rand(num_subsets, num_players, generator=generator, device=noise_device)
            .argsort(dim=1)
            .argsort(dim=1)
            < n
            for n in sizes
        ]
    ).to(x.device)  # (K, m, d), True = removed

    num_rows = len(sizes) * num_subsets
    keep = torch.cat(
        [
            torch.ones(batch, num_players, dtype=torch.bool, device=x.device),
            (~subsets).reshape(1, num_rows, num_players).expand(batch, -1, -1).reshape(-1, num_players),
        ]
    )
    images = torch.arange(batch, device=x.device)
    image_index = torch.cat([images, images.repeat_interleave(num_rows)])
    values = coalition_values(model, masker, x, keep, image_index, target, link=link, batch_size=batch_size)

    full, removed = values[:batch], values[batch:].view(batch, len(sizes), num_subsets)
    output_drop = full.view(batch, 1, 1) - removed
    attribution_sum = torch.einsum("kmd,bd->bkm", subsets.to(attributions.dtype), attributions)
    correlate = pearson if correlation == "pearson" else spearman
    return correlate(attribution_sum.to(output_drop.dtype), output_drop)
