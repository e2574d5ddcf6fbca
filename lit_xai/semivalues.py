"""Semivalues of coalitional games: Shapley, Beta Shapley and Banzhaf, exact and estimated.

A *semivalue* (Dubey, Neyman & Weber, 1981) credits player ``i`` with a weighted mean of its marginal contributions
``Δ_i(S) = v(S ∪ i) - v(S)``, the weight depending only on ``|S|``. Written with ``q_s``, the probability mass of
coalition *size* ``s = 0..d-1`` (``Σ_s q_s = 1``; each coalition of size ``s`` gets ``q_s / C(d-1, s)``):

- Shapley: ``q_s = 1/d``, Beta Shapley (Kwon & Zou, "Beta Shapley", AISTATS 2022) with ``(α, β) = (1, 1)``;
- Beta Shapley ``(α, β)``: ``q_s = C(d-1, s) B(s + β, d-1-s + α) / B(α, β)``, the size distribution of
  ``S ~ Bernoulli(t)`` with ``t ~ Beta(β, α)``: ``α > β`` favours small coalitions (the paper's Beta(16, 1));
- Banzhaf: ``q_s = C(d-1, s) / 2^(d-1)``, every coalition alike (Data Banzhaf, Wang & Jia, AISTATS 2023).

Estimators, batched over inputs like :mod:`lit_xai.shapley` (a game maps keep-masks ``(N, d)`` to ``(N, C)`` or
``(B, N, C)``):

- :func:`exact_semivalue` enumerates all ``2^d`` coalitions (ground truth, ``d <= 20``);
- :func:`permutation_sampling` draws permutations, with antithetic (reversed) pairs (Mitchell et al., "Sampling
  permutations for Shapley value estimation", JMLR 2022; Chen, Covert, Lundberg & Lee, Nature MI 2023), and keeps
  the marginal contributions *by coalition size* ``(B, d, d, C)``, so every semivalue is a weighted sum of them
  (:meth:`PermutationResult.semivalue`), as WeightedSHAP needs (Kwon & Zou, NeurIPS 2022);
- :func:`banzhaf_msr` is the maximum-sample-reuse Banzhaf estimator: ``S ~ Bernoulli(1/2)``,
  ``φ_i = mean v(S ∋ i) - mean v(S ∌ i)``; every evaluation serves every player (RISE's masks with ``p = 1/2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_xai.games import Game, check_num_players, evaluate_game, result_dtype
from lit_xai.shapley import MAX_EXACT_PLAYERS, enumerate_weighted

__all__ = [
    "PermutationResult",
    "banzhaf_msr",
    "banzhaf_size_weights",
    "beta_size_weights",
    "exact_semivalue",
    "permutation_sampling",
    "shapley_size_weights",
]


def shapley_size_weights(num_players: int) -> Tensor:
    """``q_s = 1/d`` for ``s = 0..d-1`` (float64): the Shapley value's mass per coalition size."""
    d = check_num_players(num_players)
    return torch.full((d,), 1.0 / d, dtype=torch.float64)


def banzhaf_size_weights(num_players: int) -> Tensor:
    """``q_s = C(d-1, s) / 2^(d-1)`` (float64): the Banzhaf value's mass per coalition size."""
    d = check_num_players(num_players)
    # Python's int / int is correctly rounded, even where C(d-1, s) and 2^(d-1) overflow a float
    return torch.tensor([math.comb(d - 1, s) / 2 ** (d - 1) for s in range(d)], dtype=torch.float64)


def beta_size_weights(num_players: int, alpha: float, beta: float) -> Tensor:
    """Beta Shapley's mass per coalition size, ``q_s ∝ C(d-1, s) B(s + β, d-1-s + α)`` (float64, sums to one).

    ``(1, 1)`` is the Shapley value; ``α > β`` puts more weight on small coalitions (Kwon & Zou, AISTATS 2022).
    """
    d = check_num_players(num_players)
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta Shapley needs alpha > 0 and beta > 0, got ({alpha}, {beta})")
    s = torch.arange(d, dtype=torch.float64)
    log_comb = torch.lgamma(torch.tensor(float(d))) - torch.lgamma(s + 1) - torch.lgamma(d - s)
    a, b = s + beta, d - 1 - s + alpha
    log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    log_q = log_comb + log_beta
    return torch.softmax(log_q, dim=0)


def _check_size_weights(size_weights: Tensor, d: int) -> Tensor:
    weights = torch.as_tensor(size_weights, dtype=torch.float64).flatten()
    if (
        weights.numel() != d
        or (weights < 0).any()
        or not torch.isclose(weights.sum(), weights.new_tensor(1.0))
    ):
        raise ValueError(
            f"size_weights must be {d} non-negative masses over coalition sizes 0..{d - 1} that sum to one "
            f"(e.g. shapley_size_weights({d})), got {weights.tolist()}"
        )
    return weights


def exact_semivalue(game: Game, num_players: int, size_weights: Tensor, batch_size: int = 4096) -> Tensor:
    """A semivalue by evaluating the game on every coalition.

    ``φ_i = Σ_{S ∌ i} p_{|S|} (v(S ∪ i) - v(S))`` with ``p_s = q_s / C(d-1, s)``, as one weighted sum over all
    coalitions ``T``: weight ``+p_{|T|-1}`` when ``i ∈ T``, ``-p_{|T|}`` when ``i ∉ T``; accumulated in float64.

    Args:
        game: maps a keep-mask ``(N, d)`` to values ``(N, C)`` or ``(B, N, C)``.
        num_players: ``d`` (at most 20).
        size_weights: ``q_s`` for ``s = 0..d-1`` (:func:`shapley_size_weights`, :func:`beta_size_weights`,
            :func:`banzhaf_size_weights`).
        batch_size: coalitions per call of the game.

    Returns:
        ``(d, C)`` or ``(B, d, C)``, in the game's floating dtype.
    """
    d = check_num_players(num_players)
    if d > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact semivalues need all 2^d coalitions: {2**d:,} for d={d}; use permutation_sampling or banzhaf_msr"
        )
    q = _check_size_weights(size_weights, d)
    per_coalition = q / torch.tensor([math.comb(d - 1, s) for s in range(d)], dtype=torch.float64)
    return enumerate_weighted(game, d, per_coalition, batch_size)


@dataclass
class PermutationResult:
    """Marginal contributions from permutation sampling, kept by coalition size.

    Attributes:
        sums: ``(B, d, d, C)`` float64: ``sums[b, i, s]`` adds up player ``i``'s marginal contributions
            ``v(S ∪ i) - v(S)`` over the sampled permutations in which it joined a coalition of size ``s``.
        counts: ``(d, d)``: how many permutations put player ``i`` after ``s`` others (shared by all inputs).
        num_evaluations: coalitions evaluated per input, the empty and full one included.
        single: the game returned ``(N, C)`` (one input): results drop the batch dimension.
        dtype: the game's floating dtype, that of the results (sums are kept in float64).
    """

    sums: Tensor
    counts: Tensor
    num_evaluations: int
    single: bool = False
    dtype: torch.dtype = torch.float64

    def _out(self, values: Tensor) -> Tensor:
        values = values.to(self.dtype)
        return values[0] if self.single else values

    @property
    def means(self) -> Tensor:
        """Mean marginal contribution by player and coalition size, ``(B, d, d, C)``; NaN where none was drawn."""
        counts = self.counts.to(self.sums)
        means = self.sums / counts.view(1, *counts.shape, 1)
        return self._out(torch.where(counts.view(1, *counts.shape, 1) > 0, means, float("nan")))

    def semivalue(self, size_weights: Tensor) -> Tensor:
        """The semivalue with size masses ``q_s``: ``Σ_s q_s sums_is / Σ_s q_s counts_is``, ``(B, d, C)``.

        With every size drawn equally often this is ``Σ_s q_s means_is``; in general it is the self-normalised
        importance-sampling estimate (permutations draw sizes uniformly), which is exact whenever a player's
        marginal contributions do not depend on the coalition (e.g. a linear game), and for the Shapley weights
        is the plain mean of the marginal contributions, which adds up to ``v(all) - v(∅)`` exactly.
        """
        d = self.counts.shape[0]
        q = _check_size_weights(size_weights, d).to(self.sums.device)
        numerator = torch.einsum("bisc,s->bic", self.sums, q)
        denominator = (self.counts.to(q) * q).sum(1)  # (d,)
        if (denominator == 0).any():
            raise ValueError(
                "no sampled permutation put some player at a coalition size these weights use; draw more permutations"
            )
        return self._out(numerator / denominator.view(1, d, 1))

    def shapley(self) -> Tensor:
        """Shapley values ``(B, d, C)``: the mean marginal contribution of each player."""
        return self.semivalue(shapley_size_weights(self.counts.shape[0]))


def sample_permutations(
    num_permutations: int, num_players: int, antithetic: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """``(T, d)`` uniform random permutations; with ``antithetic`` rows ``2t + 1`` reverse rows ``2t``."""
    if num_permutations < 1 or (antithetic and num_permutations % 2):
        raise ValueError(
            f"num_permutations must be a positive{' even' if antithetic else ''} number, got {num_permutations}"
        )
    count = num_permutations // 2 if antithetic else num_permutations
    perms = torch.rand(count, num_players, generator=generator).argsort(dim=1)
    if antithetic:
        perms = torch.stack([perms, perms.flip(1)], dim=1).reshape(num_permutations, num_players)
    return perms


def permutation_sampling(
    game: Game,
    num_players: int,
    num_permutations: int | None = None,
    *,
    max_evaluations: int | None = None,
    antithetic: bool = True,
    permutations: Tensor | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> PermutationResult:
    """Marginal contributions of sampled permutations, by player and coalition size.

    Each permutation adds the players one at a time: the ``d - 1`` coalitions between the empty and the full one
    are evaluated (``v(∅)`` and ``v(all)`` once for all permutations), so ``T`` permutations cost
    ``2 + T (d - 1)`` evaluations. With ``antithetic`` each permutation comes with its reverse, which puts every
    player at the mirrored position: variance reduction (Mitchell et al., JMLR 2022).

    Args:
        game: maps a keep-mask ``(N, d)`` to values ``(N, C)`` or ``(B, N, C)`` (inputs share the permutations).
        num_players: ``d``.
        num_permutations: permutations to draw (even with ``antithetic``); or give ``max_evaluations``.
        max_evaluations: the budget instead: as many permutations (pairs with ``antithetic``) as it pays for.
        antithetic: draw (permutation, reversed permutation) pairs.
        permutations: ``(T, d)`` permutations to use instead of drawing them (e.g. all ``d!`` for a test).
        batch_size: permutations evaluated per call of the game.
        generator: random generator for the permutations (CPU).

    Returns:
        A :class:`PermutationResult`; ``.shapley()``, ``.semivalue(q)``, ``.means``.

    Example:
        >>> w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        >>> game = lambda keep: (keep.double() @ w).unsqueeze(-1)  # additive: every semivalue is w
        >>> result = permutation_sampling(game, 3, 2, generator=torch.Generator().manual_seed(0))
        >>> [round(v, 12) for v in result.semivalue(beta_size_weights(3, 16, 1)).squeeze(-1).tolist()]
        [1.0, -2.0, 0.5]
        >>> result.sums.shape, result.num_evaluations  # (B, players, coalition sizes, C); 2 + 2 permutations x 2
        (torch.Size([1, 3, 3, 1]), 6)
    """
    d = check_num_players(num_players)
    if permutations is None:
        if (num_permutations is None) == (max_evaluations is None):
            raise ValueError("give either num_permutations or max_evaluations")
        if num_permutations is None:
            per = d - 1 if d > 1 else 1
            step = 2 if antithetic else 1
            num_permutations = max(0, (max_evaluations - 2) // per) // step * step
            if num_permutations == 0:
                raise ValueError(
                    f"max_evaluations={max_evaluations} pays for no permutation: {2 + step * per} are needed for "
                    f"{'an antithetic pair' if antithetic else 'one permutation'} of {d} players"
                )
        permutations = sample_permutations(num_permutations, d, antithetic, generator)
    permutations = torch.as_tensor(permutations, dtype=torch.long)
    if (
        permutations.dim() != 2
        or permutations.shape[1] != d
        or not torch.equal(permutations.sort(dim=1).values, torch.arange(d).expand_as(permutations))
    ):
        raise ValueError(f"permutations must be a (T, {d}) tensor whose rows are permutations of 0..{d - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = getattr(game, "device", None)
    ends = torch.stack([torch.zeros(d, dtype=torch.bool), torch.ones(d, dtype=torch.bool)])
    v_ends, single = evaluate_game(game, ends.to(device))
    dtype = result_dtype(v_ends)
    v_ends = v_ends.double()
    bsz, _, c = v_ends.shape
    out_device = v_ends.device
    sums = torch.zeros(bsz, d * d, c, dtype=torch.float64, device=out_device)
    counts = torch.zeros(d * d, dtype=torch.long)
    positions = torch.arange(d)
    for start in range(0, permutations.shape[0], batch_size):
        perms = permutations[start : start + batch_size]  # (t, d)
        t = perms.shape[0]
        # Row (p, k) keeps the first k + 1 players of permutation p, for k = 0..d-2 (the proper coalitions).
        ranks = perms.argsort(dim=1)  # rank of each player in its permutation
        keep = ranks.unsqueeze(1) <= positions[: d - 1].view(1, -1, 1)  # (t, d - 1, d)
        chain = v_ends[:, :1].unsqueeze(1).expand(bsz, t, 1, c)
        if d > 1:
            flat = keep.reshape(t * (d - 1), d)
            values, _ = evaluate_game(game, flat.to(device), v_ends)
            middle = values.double().reshape(bsz, t, d - 1, c)
            chain = torch.cat([chain, middle], dim=2)
        chain = torch.cat([chain, v_ends[:, 1:].unsqueeze(1).expand(bsz, t, 1, c)], dim=2)  # (B, t, d + 1, C)
        gains = chain[:, :, 1:] - chain[:, :, :-1]  # gains[:, p, s]: the player at position s joins s others
        cell = (perms * d + positions).reshape(-1)  # index of (player, size) per (permutation, position)
        sums.index_add_(1, cell.to(out_device), gains.reshape(bsz, t * d, c))
        counts += torch.bincount(cell, minlength=d * d)
    evaluations = 2 + permutations.shape[0] * max(d - 1, 0)
    return PermutationResult(sums.reshape(bsz, d, d, c), counts.reshape(d, d), evaluations, single, dtype)


def banzhaf_msr(
    game: Game,
    num_players: int,
    num_samples: int,
    *,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
    masks: Tensor | None = None,
) -> Tensor:
    """Banzhaf values by maximum sample reuse (Wang & Jia, "Data Banzhaf", AISTATS 2023).

    Draws ``S ~ Bernoulli(1/2)^d`` and returns ``φ_i = mean_{S ∋ i} v(S) - mean_{S ∌ i} v(S)``: every
    evaluation enters every player's estimate, which makes it far more sample-efficient than estimating each
    player's contributions apart. ``num_samples`` evaluations in all.

    Args:
        game: maps a keep-mask ``(N, d)`` to ``(N, C)`` or ``(B, N, C)``.
        num_players: ``d``.
        num_samples: coalitions to draw (ignored when ``masks`` is given).
        batch_size: coalitions per call of the game.
        generator: random generator of the masks (CPU).
        masks: ``(N, d)`` coalitions to use instead (e.g. all ``2^d``, which gives the exact Banzhaf values).

    Returns:
        ``(d, C)`` or ``(B, d, C)``.
    """
    d = check_num_players(num_players)
    if masks is None:
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")
        masks = torch.rand(num_samples, d, generator=generator) < 0.5
    masks = masks.bool()
    device = getattr(game, "device", None)
    inside = total = first = single = None
    for start in range(0, masks.shape[0], batch_size):
        keep = masks[start : start + batch_size]
        values, single = evaluate_game(game, keep.to(device), first)
        values = values.double()
        first = values if first is None else first
        part = torch.einsum("nd,bnc->bdc", keep.to(values), values)
        inside = part if inside is None else inside + part
        total = values.sum(1) if total is None else total + values.sum(1)
    count = masks.sum(0).to(inside)  # (d,)
    if (count == 0).any() or (count == masks.shape[0]).any():
        raise ValueError("some player was kept in every sampled coalition or in none; draw more samples")
    outside = total.unsqueeze(1) - inside
    phi = inside / count.view(1, d, 1) - outside / (masks.shape[0] - count).view(1, d, 1)
    phi = phi.to(result_dtype(first))
    return phi[0] if single else phi
