"""Coalition samplers: which players to keep.

- :class:`UniformSizeSampler`: the subset size is uniform on ``0..d``, then a uniform subset of that size. This is
  the distribution the ViT Shapley surrogate is trained on (Covert, Kim & Lee, ICLR 2023), so the surrogate sees
  nearly empty and nearly full images equally often.
- :class:`ShapleySampler`: the Shapley kernel with its exact cardinality distribution
  ``p(k) ∝ 1 / (k (d - k))`` for ``k`` in ``1..d-1`` (Lundberg & Lee 2017; Jethani et al., FastSHAP, ICLR 2022).
  Sampling the size first and then a uniform subset of that size gives exactly the kernel's weight per subset.

Both accept ``paired=True``: rows come in (S, complement of S) pairs, rows ``2i`` and ``2i + 1``, which reduces the
variance of Shapley estimates (Covert & Lee, AISTATS 2021). All randomness flows through an optional
``torch.Generator`` so runs are reproducible and each DDP rank can be seeded apart.

- :class:`LeverageSampler`: Leverage SHAP's design (Musco & Witter, "Provably Accurate Shapley Value Estimation via
  Leverage Score Sampling", ICLR 2025) for a fixed budget: subset sizes uniform, subsets uniform within a size,
  paired, *without replacement*, each row carrying the importance weight that turns the sample back into the
  Shapley kernel's regression.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LeverageSampler",
    "SubsetSampler",
    "UniformSizeSampler",
    "ShapleySampler",
    "keyed_seed",
    "shapley_size_probabilities",
]


def keyed_seed(*key: int) -> int:
    """A seed that depends only on ``key`` (e.g. seed, stage, rank, step), for a generator a resumed run redraws.

    Random draws keyed by the training step, not taken from a global generator whose state a checkpoint does not
    hold, make a run resumed mid-epoch draw exactly what the uninterrupted run drew.
    """
    seed = 0
    for part in key:
        seed = (seed * 1_000_003 + int(part)) % (2**62)
    return seed


def shapley_size_probabilities(num_players: int) -> Tensor:
    """``p(k) ∝ 1/(k(d-k))`` for ``k = 1..d-1`` (float64, sums to one)."""
    if num_players < 2:
        raise ValueError(f"the Shapley kernel needs at least 2 players, got {num_players}")
    k = torch.arange(1, num_players, dtype=torch.float64)
    weights = 1.0 / (k * (num_players - k))
    return weights / weights.sum()


class SubsetSampler:
    """Base class: draw subset sizes, then uniform subsets of those sizes.

    Args:
        num_players: number of players ``d``.
        paired: return each subset followed by its complement.
    """

    def __init__(self, num_players: int, paired: bool = False) -> None:
        if num_players < 1:
            raise ValueError(f"num_players must be at least 1, got {num_players}")
        self.num_players = int(num_players)
        self.paired = bool(paired)

    def size_probabilities(self) -> Tensor:
        """Probabilities of subset sizes ``0..d`` (length ``d + 1``)."""
        raise NotImplementedError

    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``num_samples`` keep-masks of shape ``(num_samples, d)`` (bool).

        With ``paired=True``, ``num_samples`` must be even and rows ``2i + 1`` are the complements of rows ``2i``.
        """
        if num_samples < 0:
            raise ValueError(f"num_samples must be non-negative, got {num_samples}")
        if self.paired and num_samples % 2:
            raise ValueError(
                f"paired sampling returns (subset, complement) pairs: num_samples must be even, got {num_samples}"
            )
        gen_device = generator.device if generator is not None else torch.device("cpu")
        n = num_samples // 2 if self.paired else num_samples
        probs = self.size_probabilities().to(torch.float32)
        sizes = torch.multinomial(probs, n, replacement=True, generator=generator).to(gen_device)
        # Uniform subset of each size: rank players by uniform noise and keep the `size` smallest.
        noise = torch.rand(n, self.num_players, generator=generator, device=gen_device)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        keep = ranks < sizes.unsqueeze(1)
        if self.paired:
            keep = torch.stack([keep, ~keep], dim=1).reshape(num_samples, self.num_players)
        return keep.to(device)


class UniformSizeSampler(SubsetSampler):
    """Subset size uniform on ``0..d``, then a uniform subset of that size (surrogate training)."""

    def size_probabilities(self) -> Tensor:
        return torch.full((self.num_players + 1,), 1.0 / (self.num_players + 1), dtype=torch.float64)


class ShapleySampler(SubsetSampler):
    """Shapley kernel: size ``k`` in ``1..d-1`` with ``p(k) ∝ 1/(k(d-k))``, then a uniform subset of size ``k``."""

    def __init__(self, num_players: int, paired: bool = False) -> None:
        if num_players < 2:
            raise ValueError(f"the Shapley kernel needs at least 2 players, got {num_players}")
        super().__init__(num_players, paired)

    def size_probabilities(self) -> Tensor:
        probs = torch.zeros(self.num_players + 1, dtype=torch.float64)
        probs[1:-1] = shapley_size_probabilities(self.num_players)
        return probs


#: Subsets of one size are drawn from a full list of that size's subsets when there are at most this many times as
#: many as needed (rejection of repeats would be slow), by rejecting repeats otherwise.
_ENUMERATE_FACTOR = 4


class LeverageSampler:
    """Leverage SHAP's coalitions for a fixed budget (Musco & Witter, ICLR 2025; as the authors' code, which fixes
    the count per size where the paper's Algorithm 1 keeps each coalition independently with that probability).

    The leverage score of a coalition ``S`` in the Shapley regression is proportional to ``1 / C(d, |S|)``, so
    sampling by leverage means: sizes ``1..d-1`` equally often, a uniform subset within a size. Sampling is without
    replacement: the expected count of every size is capped by the number of its subsets (water-filling), so at
    large budgets the small and large sizes are enumerated completely and contribute their exact terms. With
    ``paired`` the units are (S, complement) pairs; a pair of two size-``d/2`` halves is one unit of that size.

    Each row carries an importance weight ``ω = P_j U / u_j``: ``P_j`` is the Shapley kernel's probability of the
    unit's stratum ``j`` (sizes ``j`` and ``d - j``), ``u_j`` the units drawn from it and ``U`` all units. The
    weighted moments ``Σ ω z zᵀ / U`` are then the stratified estimate ``Σ_j P_j mean_j(z zᵀ)`` of KernelSHAP's
    ``A = E_kernel[z zᵀ]`` (and likewise ``b``): the regression is re-weighted back to the Shapley kernel. Units are
    returned in a random order, so every prefix (each step of the engine's trajectory) is a uniform sample of the
    plan and its estimate a consistent one.

    Args:
        num_players: number of players ``d`` (at least 2).
        paired: draw (S, complement) pairs (rows ``2i`` and ``2i + 1``), as the paper does.
    """

    def __init__(self, num_players: int, paired: bool = True) -> None:
        if num_players < 2:
            raise ValueError(f"Leverage SHAP needs at least 2 players, got {num_players}")
        self.num_players = int(num_players)
        self.paired = bool(paired)

    def strata(self) -> tuple[list[int], Tensor, Tensor, Tensor]:
        """``(sizes, capacity, rate, mass)`` per stratum: the smaller size of its coalitions, the number of units it
        holds, its share of units under uniform sizes, and the Shapley kernel's probability of its coalitions."""
        d = self.num_players
        kernel = torch.zeros(d + 1, dtype=torch.float64)
        kernel[1:-1] = shapley_size_probabilities(d)
        sizes = list(range(1, d // 2 + 1)) if self.paired else list(range(1, d))
        capacity, rate, mass = [], [], []
        for k in sizes:
            middle = self.paired and 2 * k == d
            # A stratum k < d/2 of pairs covers sizes k and d - k; the middle one only d/2, with half the pairs.
            capacity.append(math.comb(d, k) // 2 if middle else math.comb(d, k))
            rate.append(0.5 if middle else 1.0)
            mass.append(float(kernel[k] if middle or not self.paired else 2 * kernel[k]))
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
        return sizes, as_tensor(capacity), as_tensor(rate), as_tensor(mass)

    def max_rows(self) -> int:
        """Rows of a complete enumeration: every coalition except the empty and the full one."""
        return 2**self.num_players - 2

    def units_per_stratum(self, units: int) -> Tensor:
        """Units drawn from each stratum for ``units`` in all: ``min(rate_j c, capacity_j)`` with ``c`` chosen so
        they add up (water-filling), rounded to integers that add up exactly."""
        _, capacity, rate, _ = self.strata()
        units = min(int(units), int(capacity.sum()))
        low, high = 0.0, float((capacity / rate).max())
        for _ in range(200):  # bisection on c; the total is increasing and piecewise linear in c
            mid = 0.5 * (low + high)
            if float(torch.minimum(rate * mid, capacity).sum()) < units:
                low = mid
            else:
                high = mid
        target = torch.minimum(rate * high, capacity)
        counts = target.floor()
        # Hand the units lost to rounding down to the strata with the largest remainders that still have room.
        remainder = torch.where(counts < capacity, target - counts, torch.full_like(target, -1.0))
        for j in remainder.argsort(descending=True)[: units - int(counts.sum())]:
            counts[j] += 1
        return counts.long()

    def sample(self, num_rows: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The plan for a budget of ``num_rows`` coalitions (at most :meth:`max_rows`; even when ``paired``).

        Returns:
            ``(keep, weight)``: keep-masks ``(N, d)`` (bool; pairs in rows ``2i``, ``2i + 1``) in random unit order and
            importance weights ``(N,)`` (float64, mean one per unit).
        """
        step = 2 if self.paired else 1
        if num_rows < step or num_rows % step:
            raise ValueError(
                f"num_rows must be a positive{' even' if self.paired else ''} number of coalitions, got {num_rows}"
            )
        d = self.num_players
        sizes, _, _, mass = self.strata()
        counts = self.units_per_stratum(min(num_rows, self.max_rows()) // step)
        total = int(counts.sum())
        blocks, weights = [], []
        for k, count, p in zip(sizes, counts.tolist(), mass.tolist()):
            if count == 0:
                continue
            if self.paired and 2 * k == d:
                # Canonical half: the one holding the last player, so a pair is never drawn twice in two guises.
                rest = _distinct_subsets(d - 1, k - 1, count, generator)
                block = torch.cat([rest, torch.ones(count, 1, dtype=torch.bool)], dim=1)
            else:
                block = _distinct_subsets(d, k, count, generator)
            blocks.append(block)
            weights.append(torch.full((count,), p * total / count, dtype=torch.float64))
        keep, weight = torch.cat(blocks), torch.cat(weights)
        order = torch.randperm(total, generator=generator)
        keep, weight = keep[order], weight[order]
        if self.paired:
            keep = torch.stack([keep, ~keep], dim=1).reshape(2 * total, d)
            weight = weight.repeat_interleave(2)
        return keep, weight


def _distinct_subsets(n: int, size: int, count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` distinct uniform subsets of ``size`` out of ``n`` players, as keep-masks ``(count, n)``."""
    total = math.comb(n, size)
    if count > total:
        raise ValueError(
            f"cannot draw {count} distinct subsets of size {size} from {n} players ({total} exist)"
        )
    if total <= _ENUMERATE_FACTOR * count:
        # itertools rather than torch.combinations, whose memory grows as n ** size
        members = torch.tensor(list(itertools.combinations(range(n), size)), dtype=torch.long).reshape(
            total, size
        )
        members = members[torch.randperm(total, generator=generator)[:count]]
        keep = torch.zeros(count, n, dtype=torch.bool)
        return keep.scatter_(1, members, True)
    # Far more subsets than needed: draw uniform ones and reject repeats (rare), keyed by their packed bits.
    seen: dict[bytes, Tensor] = {}
    while len(seen) < count:
        noise = torch.rand(2 * (count - len(seen)) + 8, n, generator=generator)
        rows = noise.argsort(dim=1).argsort(dim=1) < size
        for row, key in zip(rows, np.packbits(rows.numpy(), axis=1)):
            seen.setdefault(key.tobytes(), row)
            if len(seen) == count:
                break
    return torch.stack(list(seen.values()))
