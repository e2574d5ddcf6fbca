"""Baselines for dynamic feature selection that use the same predictor: static rankings and random orders.

A *static* method acquires the same features, in the same order, for every input; Covert et al. (ICML 2023) compare
the learned dynamic policy against rankings by permutation importance and by global Shapley-based importance. Here
all orders are scored with the same masked predictor as the policy (trained on random subsets, so it can predict
from any of them), which isolates the value of choosing features per input:

- :func:`permutation_importance` / :func:`shapley_ranking`: global rankings of a pre-trained predictor.
- :func:`greedy_static_order`: forward selection of one global order on held-out data (a strong static order).
- :func:`random_orders`: an independent random order per input.
- :func:`evaluate_orders`: predictions after each of the first ``k`` features of any order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.players import Players

__all__ = [
    "PredictFn",
    "evaluate_orders",
    "greedy_static_order",
    "permutation_importance",
    "random_orders",
    "ranking",
    "shapley_ranking",
]

#: ``predict(x, keep) -> logits``: e.g. ``DynamicSelector.predict`` or ``MaskedPredictorModule.forward``.
PredictFn = Callable[[Tensor, Tensor], Tensor]


def ranking(importance: Tensor) -> Tensor:
    """Players sorted from most to least important, ``(d,)`` long (ties broken by index)."""
    if importance.dim() != 1:
        raise ValueError(
            f"importance must be one value per feature (d,), got shape {tuple(importance.shape)}"
        )
    return torch.sort(importance, descending=True, stable=True).indices


@torch.no_grad()
def permutation_importance(
    predict: PredictFn,
    x: Tensor,
    target: Tensor,
    players: Players,
    num_repeats: int = 3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean increase of the cross-entropy when one player's values are shuffled across the rows of ``x``.

    All other players stay present; a grouped player (a pixel block, a column group) is shuffled as a whole.

    Returns:
        ``(d,)`` importance; rank with :func:`ranking`.
    """
    players.check_input(x)
    if num_repeats < 1:
        raise ValueError(f"num_repeats must be at least 1, got {num_repeats}")
    d, n = players.num_players, x.shape[0]
    everything = torch.ones(n, d, dtype=torch.bool, device=x.device)
    base = F.cross_entropy(predict(x, everything), target)
    importance = torch.zeros(d, device=x.device)
    for _ in range(num_repeats):
        shuffled = x[torch.randperm(n, generator=generator).to(x.device)]
        for player in range(d):
            others = everything.clone()
            others[:, player] = False
            m = players.expand_mask(others).to(x)
            mixed = x * m + shuffled * (1 - m)
            importance[player] += F.cross_entropy(predict(mixed, everything), target) - base
    return importance / num_repeats


def shapley_ranking(values: Tensor) -> Tensor:
    """Global ranking by mean absolute Shapley value over inputs.

    Args:
        values: ``(B, d)`` or ``(B, d, C)`` Shapley values (e.g. from :func:`lit_xai.shapley.shapley_values` with
            ``target`` the true class); classes are summed in absolute value.
    """
    if values.dim() == 3:
        values = values.abs().sum(dim=-1)
    if values.dim() != 2:
        raise ValueError(f"Shapley values must have shape (B, d) or (B, d, C), got {tuple(values.shape)}")
    return ranking(values.abs().mean(dim=0))


@torch.no_grad()
def greedy_static_order(
    predict: PredictFn,
    x: Tensor,
    target: Tensor,
    num_players: int,
    num_steps: int,
    candidates: Tensor | None = None,
) -> Tensor:
    """One global order built by forward selection: each step adds the player that lowers the mean loss most.

    Args:
        candidates: optional players to choose from (default all); with many players (784 MNIST pixels) forward
            selection over all of them costs ``d * num_steps`` predictions, so a pool such as the top of a
            permutation ranking keeps it affordable.

    Returns:
        ``(num_steps,)`` long.
    """
    pool = list(range(num_players)) if candidates is None else [int(c) for c in candidates]
    if not 1 <= num_steps <= len(pool):
        raise ValueError(f"num_steps must be in 1..{len(pool)} (the candidates), got {num_steps}")
    if len(set(pool)) != len(pool) or not all(0 <= c < num_players for c in pool):
        raise ValueError(f"candidates must be distinct players in 0..{num_players - 1}")
    n = x.shape[0]
    keep = torch.zeros(n, num_players, dtype=torch.bool, device=x.device)
    order: list[int] = []
    for _ in range(num_steps):
        losses = torch.full((num_players,), float("inf"))
        for player in pool:
            if player in order:
                continue
            trial = keep.clone()
            trial[:, player] = True
            losses[player] = F.cross_entropy(predict(x, trial), target).item()
        best = int(losses.argmin())
        order.append(best)
        keep[:, best] = True
    return torch.tensor(order, dtype=torch.long)


def random_orders(num_inputs: int, num_players: int, generator: torch.Generator | None = None) -> Tensor:
    """An independent uniformly random order per input, ``(num_inputs, num_players)`` long."""
    return torch.rand(num_inputs, num_players, generator=generator).argsort(dim=1)


@torch.no_grad()
def evaluate_orders(predict: PredictFn, x: Tensor, order: Tensor, num_players: int, budget: int) -> Tensor:
    """Predictions after the first ``0..budget`` features of ``order``.

    Args:
        predict: ``predict(x, keep) -> logits``.
        x: inputs ``(B, ...)``.
        order: one order for all inputs ``(T,)``, or one per input ``(B, T)``, with ``T >= budget``.
        num_players: number of players ``d``.
        budget: largest number of features.

    Returns:
        ``(B, budget + 1, C)`` logits; index ``k`` uses the first ``k`` features.
    """
    n = x.shape[0]
    if order.dim() == 1:
        order = order.unsqueeze(0).expand(n, -1)
    if order.dim() != 2 or order.shape[0] != n:
        raise ValueError(f"order must have shape (T,) or ({n}, T), got {tuple(order.shape)}")
    if not 0 <= budget <= order.shape[1]:
        raise ValueError(f"budget must be in 0..{order.shape[1]} (the length of the order), got {budget}")
    keep = torch.zeros(n, num_players, dtype=torch.bool, device=x.device)
    rows = torch.arange(n, device=x.device)
    steps = [predict(x, keep)]
    for k in range(budget):
        keep = keep.clone()
        keep[rows, order[:, k].to(x.device)] = True
        steps.append(predict(x, keep))
    return torch.stack(steps, dim=1)
