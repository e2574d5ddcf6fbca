"""Banzhaf values as an attribution baseline, by maximum sample reuse (Wang & Jia, "Data Banzhaf: A Robust Data
Valuation Framework for Machine Learning", AISTATS 2023).

The Banzhaf value of player ``i`` is its mean marginal contribution over *all* coalitions alike,
``2^-(d-1) Σ_{S ∌ i} (v(S ∪ i) - v(S))``, which equals ``E[v(S) | i ∈ S] - E[v(S) | i ∉ S]`` for
``S ~ Bernoulli(1/2)``. The maximum-sample-reuse estimator uses every evaluated coalition for every player; its
coalitions are exactly RISE's masks with ``p = 1/2`` (:meth:`RISE.attribute_all_and_banzhaf` returns both from one
set of evaluations). Banzhaf values are not efficient (they do not add up to ``v(all) - v(∅)``) but are the most
robust semivalue to noise in the game (Wang & Jia). :func:`lit_xai.semivalues.banzhaf_msr` is the same estimator on
any game; :func:`lit_xai.semivalues.exact_semivalue` with :func:`~lit_xai.semivalues.banzhaf_size_weights` is the
ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lit_xai.attribution.perturbation import RISE, _banzhaf
from lit_xai.players import Players

__all__ = ["Banzhaf"]


class Banzhaf(RISE):
    """Banzhaf values ``(B, d)`` (``(B, d, C)`` from :meth:`attribute_all`) from ``num_masks`` Bernoulli(1/2) masks.

    Args:
        model: the network to explain.
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        num_masks: coalitions evaluated per input.
        seed: seed of the masks (the same masks for every input and call); with RISE's seed and ``num_masks`` they
            are RISE's masks. ``None`` draws new masks from the global random state.
        link: scale of the values (``"softmax"`` by default; ``"logits"`` for additive answers).
        batch_size: at most this many masked inputs per forward pass.
    """

    name = "banzhaf"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        num_masks: int = 2000,
        seed: int | None = 0,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        if num_masks < 2:
            raise ValueError(f"num_masks must be at least 2, got {num_masks}")
        super().__init__(
            model,
            players,
            masker,
            num_masks=num_masks,
            keep_prob=0.5,
            seed=seed,
            link=link,
            batch_size=batch_size,
        )

    def _all_classes(self, x: Tensor) -> Tensor:
        return _banzhaf(*self._mask_sums(x))
