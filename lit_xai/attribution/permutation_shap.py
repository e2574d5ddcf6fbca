"""Shapley values by antithetic permutation sampling, as an attribution baseline.

Each sampled permutation adds the players one at a time and credits each with its marginal contribution; each
permutation comes with its reverse (antithetic sampling), which the survey of Chen, Covert, Lundberg & Lee
("Algorithms to estimate Shapley value feature attributions", Nature MI 2023) and Mitchell et al. (JMLR 2022)
find among the strongest estimators per evaluation. The engine (:func:`lit_xai.semivalues.permutation_sampling`)
keeps the contributions by coalition size, so :class:`~lit_xai.attribution.beta_shapley.BetaShapley` and
WeightedSHAP reuse it with other weights. The estimate adds up to ``v(all) - v(∅)`` exactly; a budget of ``n``
evaluations buys ``(n - 2) // (d - 1)`` permutations (rounded down to pairs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import resolve_target
from lit_xai.attribution.perturbation import PerturbationAttribution
from lit_xai.games import ModelGame
from lit_xai.players import Players
from lit_xai.semivalues import PermutationResult, permutation_sampling

__all__ = ["PermutationSHAP"]


class PermutationSHAP(PerturbationAttribution):
    """Shapley values from antithetic permutations through a masker, batched over inputs (shared permutations).

    Args:
        model: the network to explain (in eval mode: the game must be deterministic).
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        max_evaluations: the budget: coalitions evaluated per input, the empty and full ones included.
        antithetic: pair every permutation with its reverse.
        seed: seed of the permutations (drawn on the CPU); ``None`` uses the global random state.
        link: scale of the game's values (``"softmax"`` by default; ``"logits"`` for additive answers).
        batch_size: masked inputs per forward pass.
        permutations_per_step: permutations whose coalitions go to the game in one call.

    The engine's result of the last call (contributions by size, counts, evaluations) is kept in ``last_result``.
    """

    name = "permutation_shap"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        max_evaluations: int = 2048,
        antithetic: bool = True,
        seed: int | None = 0,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 512,
        permutations_per_step: int = 32,
    ) -> None:
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        self.max_evaluations = int(max_evaluations)
        self.antithetic = bool(antithetic)
        self.seed = seed
        self.permutations_per_step = int(permutations_per_step)
        self.last_result: PermutationResult | None = None

    def _values(self, result: PermutationResult) -> Tensor:
        """The attribution from the contributions by size: here the Shapley value."""
        return result.shapley()

    def _contributions(self, x: Tensor, target: Tensor | None) -> PermutationResult:
        # kept for subclasses that evaluate more coalitions of the same game (WeightedSHAP's recovery curves)
        self._game = game = ModelGame(
            self.model, self.masker, x, link=self.link, batch_size=self.batch_size, target=target
        )
        generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        self.last_result = permutation_sampling(
            game,
            self.players.num_players,
            max_evaluations=self.max_evaluations,
            antithetic=self.antithetic,
            batch_size=self.permutations_per_step,
            generator=generator,
        )
        return self.last_result

    def _all_classes(self, x: Tensor) -> Tensor:
        return self._values(self._contributions(x, None))

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            everyone = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
            target = resolve_target(target, x.shape[0], self.masker(self.model, x, everyone))
            return self._values(self._contributions(x, target))[..., 0]
