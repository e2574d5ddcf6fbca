"""Leverage SHAP as an attribution baseline (Musco & Witter, "Provably Accurate Shapley Value Estimation via
Leverage Score Sampling", ICLR 2025).

KernelSHAP's regression on coalitions sampled by their leverage scores: sizes uniform, subsets uniform within a size,
(S, complement) pairs, without replacement, the regression re-weighted back to the Shapley kernel
(:class:`~lit_xai.sampling.LeverageSampler`, :func:`lit_xai.shapley.kernel_shap` with ``sampler="leverage"``). With
``O(d log d)`` evaluations it has a (1 + ε) guarantee that KernelSHAP lacks, and the paper measures about half of
KernelSHAP's error at equal budgets. It spends a fixed budget (no stopping rule), so methods compare at equal cost.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lit_xai.attribution.kernel_shap import KernelSHAP
from lit_xai.players import Players

__all__ = ["LeverageSHAP"]


class LeverageSHAP(KernelSHAP):
    """Leverage SHAP through a masker, batched over inputs (all inputs share the coalitions).

    Args:
        model: the network to explain (in eval mode: the game must be deterministic).
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        link: scale of the game's values (``"softmax"`` by default, ``"logits"`` for additive answers).
        batch_size: masked inputs per forward pass.
        max_evaluations: the budget: coalitions evaluated per input, the empty and full ones included (capped at
            ``2^d``, where the values are exact).
        num_coalitions: coalitions evaluated per step of the engine.
        paired: sample (S, complement) pairs, as the paper does.
        seed: seed of the coalitions (drawn on the CPU); ``None`` uses the global random state.

    Returns values ``(B, d)`` from :meth:`attribute`, ``(B, d, C)`` from :meth:`attribute_all`; they add up to
    ``v(all) - v(empty)`` exactly.
    """

    name = "leverage_shap"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 512,
        max_evaluations: int = 2048,
        num_coalitions: int = 512,
        paired: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            model,
            players,
            masker,
            link=link,
            batch_size=batch_size,
            num_coalitions=num_coalitions,
            paired=paired,
            threshold=None,
            max_evaluations=max_evaluations,
            seed=seed,
            sampler="leverage",
        )
