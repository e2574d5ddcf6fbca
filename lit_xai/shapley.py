"""Shapley values of coalitional games: exact enumeration and convergent KernelSHAP.

A *game* is any callable that maps a keep-mask ``(N, d)`` (bool, ``True`` = player present) to values ``(N, C)``
for one input, or ``(B, N, C)`` for ``B`` inputs evaluated on the same ``N`` coalitions. Sharing coalitions across
inputs is how everything here is batched over images: one set of masks, many images.

- :func:`exact_shapley` enumerates all ``2^d`` coalitions (``d <= 20``) and applies the closed-form Shapley
  weights (Shapley, 1953). It is the ground truth for tests and for Shapley-error metrics.
- :func:`kernel_shap` is convergent KernelSHAP (Covert & Lee, AISTATS 2021), or Leverage SHAP (Musco & Witter,
  ICLR 2025) with ``sampler="leverage"``: defined in :mod:`lit_xai.kernel_shap`, importable from here too.
- :func:`shapley_values` runs either estimator on the game of a model, a masker and a batch of inputs
  (:class:`~lit_xai.games.ModelGame`, defined in :mod:`lit_xai.games` and importable from here too).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.games import (
    Game,
    ModelGame,
    check_num_players,
    enumerate_coalitions,
    evaluate_game,
    result_dtype,
)
from lit_xai.kernel_shap import KernelShapResult, kernel_shap
from lit_xai.masking import Masker

__all__ = [
    "Game",
    "KernelShapResult",
    "ModelGame",
    "exact_shapley",
    "kernel_shap",
    "shapley_values",
    "shapley_weights",
]

#: Largest number of players :func:`exact_shapley` accepts (2^20 ~ one million coalitions per input).
MAX_EXACT_PLAYERS = 20


def shapley_weights(num_players: int) -> Tensor:
    """``w(s) = s! (d - s - 1)! / d!`` for ``s = 0 .. d-1``: the weight of ``v(S ∪ i) - v(S)`` with ``|S| = s``."""
    d = check_num_players(num_players)
    # Python integers keep the factorials exact; one correctly rounded division per weight.
    return torch.tensor(
        [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)],
        dtype=torch.float64,
    )


def exact_shapley(game: Game, num_players: int, batch_size: int = 4096) -> Tensor:
    """Exact Shapley values by evaluating the game on every coalition.

    Uses ``φ_i = Σ_{S ∌ i} w(|S|) (v(S ∪ i) - v(S))`` rearranged as one weighted sum over all coalitions ``T``:
    ``T`` enters ``φ_i`` with weight ``+w(|T| - 1)`` when ``i ∈ T`` (as ``S ∪ i``) and ``-w(|T|)`` when
    ``i ∉ T`` (as ``S``). Sums are accumulated in float64.

    Coalitions are created on ``game.device`` when the game has that attribute (as :class:`ModelGame` does).

    Args:
        game: maps a keep-mask ``(N, d)`` to values ``(N, C)`` or ``(B, N, C)``.
        num_players: number of players ``d`` (at most 20).
        batch_size: coalitions passed to the game per call.

    Returns:
        Shapley values ``(d, C)``, or ``(B, d, C)`` for a batched game, in the game's floating dtype.
    """
    d = check_num_players(num_players)
    if d > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact Shapley values need all 2^d coalitions: d={d} players means {2**d:,} evaluations per input. "
            f"Use kernel_shap for more than {MAX_EXACT_PLAYERS} players (or coarser players, e.g. larger patches)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return enumerate_weighted(game, d, shapley_weights(d), batch_size)


def enumerate_weighted(game: Game, d: int, weights: Tensor, batch_size: int) -> Tensor:
    """``φ_i = Σ_{S ∌ i} w(|S|) (v(S ∪ i) - v(S))`` over every coalition, for per-coalition weights ``w`` ``(d,)``.

    The one enumeration behind :func:`exact_shapley` and every exact semivalue
    (:func:`lit_xai.semivalues.exact_semivalue`): coalition ``T`` enters ``φ_i`` with ``+w(|T| - 1)`` when ``i ∈ T``
    and ``-w(|T|)`` otherwise; sums in float64, results in the game's dtype, ``(d, C)`` or ``(B, d, C)``.
    """
    device = getattr(game, "device", None)
    zero = torch.zeros(1, dtype=torch.float64)
    plus = torch.cat([zero, weights]).to(device)  # plus[k] = w(k - 1): size-k coalitions containing i
    minus = torch.cat([weights, zero]).to(device)  # minus[k] = w(k): size-k coalitions missing i
    phi = first = single = None
    for start in range(0, 2**d, batch_size):
        keep = enumerate_coalitions(start, min(start + batch_size, 2**d), d, device)
        values, single = evaluate_game(game, keep, first)
        if first is None:
            first = values
            phi = torch.zeros(values.shape[0], d, values.shape[2], dtype=torch.float64, device=values.device)
        size = keep.sum(1)
        coef = torch.where(keep, plus[size].unsqueeze(1), -minus[size].unsqueeze(1)).to(values.device)
        phi += torch.einsum("nd,bnc->bdc", coef, values.to(torch.float64))
    phi = phi.to(result_dtype(first))
    return phi[0] if single else phi


def shapley_values(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    method: str = "exact",
    link: str | Callable[[Tensor], Tensor] = "softmax",
    target: int | Tensor | None = None,
    model_batch_size: int = 512,
    **kwargs,
) -> Tensor:
    """Shapley values ``(B, d, C)`` of ``model`` on ``x`` (``C = 1`` with a ``target``).

    ``method="exact"`` calls :func:`exact_shapley`, ``method="kernel"`` :func:`kernel_shap` (use it directly for
    the standard deviations and the trajectory); ``kwargs`` go to the method.
    """
    game = ModelGame(model, masker, x, link=link, batch_size=model_batch_size, target=target)
    if method == "exact":
        return exact_shapley(game, game.num_players, **kwargs)
    if method == "kernel":
        return kernel_shap(game, game.num_players, **kwargs).values
    raise ValueError(
        f"unknown method {method!r}; choose 'exact' (up to {MAX_EXACT_PLAYERS} players) or 'kernel'"
    )
