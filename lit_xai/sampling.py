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
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
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
        return keep.to(device) if device is not None else keep


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
