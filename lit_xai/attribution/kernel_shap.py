"""KernelSHAP as an attribution baseline (Lundberg & Lee, NeurIPS 2017; Covert & Lee, AISTATS 2021).

A thin wrapper that runs the toolkit's Shapley engine (:func:`lit_xai.shapley.kernel_shap`: paired sampling from the
Shapley kernel, constrained least squares, variance-based stopping) on a :class:`~lit_xai.games.ModelGame`, so
KernelSHAP is called like every other explainer. The estimate is exactly efficient: the players' values add up
to ``v(all) - v(empty)``; for a linear model with zero-filled players and ``link="logits"`` they converge to
``w * (x - baseline)`` per player.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import resolve_target
from lit_xai.attribution.perturbation import PerturbationAttribution
from lit_xai.players import Players
from lit_xai.shapley import KernelShapResult, ModelGame, kernel_shap

__all__ = ["KernelSHAP"]


class KernelSHAP(PerturbationAttribution):
    """KernelSHAP through a masker, batched over inputs (all inputs share the sampled coalitions).

    Args:
        model: the network to explain (put it in eval mode: the game must be deterministic).
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        link: scale of the game's values: ``"softmax"`` (default, as ViT Shapley), ``"logits"``, ...
        batch_size: masked inputs per forward pass.
        num_coalitions: coalitions sampled per estimation step (even when ``paired``).
        paired: sample each coalition together with its complement.
        threshold: stop when ``max std / (max phi - min phi)`` falls below it for every input; ``None`` always
            uses ``max_evaluations``.
        max_evaluations: cap on coalitions evaluated per input (the engine warns when it stops here unconverged).
        min_evaluations: never stop before this many coalitions.
        sampler: ``"kernel"`` (KernelSHAP) or ``"leverage"`` (Leverage SHAP, a fixed budget: ``threshold=None``;
            see :class:`~lit_xai.attribution.leverage_shap.LeverageSHAP`).
        seed: seed of the coalition sampler (drawn on the CPU, so results agree across devices); ``None`` uses the
            global random state.

    :meth:`attribute` estimates only the target class (convergence is judged on it alone); :meth:`attribute_all`
    estimates every class, ``(B, d, C)``. The engine's full result (standard deviations, evaluations, whether it
    converged) of the last call is kept in ``last_result``.
    """

    name = "kernel_shap"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 512,
        num_coalitions: int = 512,
        paired: bool = True,
        threshold: float | None = 0.01,
        max_evaluations: int = 10_000,
        min_evaluations: int = 0,
        seed: int | None = 0,
        sampler: str = "kernel",
    ) -> None:
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        self.engine_kwargs = dict(
            batch_size=int(num_coalitions),
            paired=bool(paired),
            threshold=threshold,
            max_evaluations=int(max_evaluations),
            min_evaluations=int(min_evaluations),
            sampler=sampler,
        )
        self.seed = seed
        self.last_result: KernelShapResult | None = None

    def _estimate(self, x: Tensor, target: Tensor | None) -> Tensor:
        game = ModelGame(
            self.model, self.masker, x, link=self.link, batch_size=self.batch_size, target=target
        )
        generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        self.last_result = kernel_shap(
            game, self.players.num_players, generator=generator, **self.engine_kwargs
        )
        return self.last_result.values  # (B, d, C), C = 1 with a target

    def _all_classes(self, x: Tensor) -> Tensor:
        return self._estimate(x, None)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            everyone = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
            logits = self.masker(self.model, x, everyone)
            target = resolve_target(target, x.shape[0], logits)
            return self._estimate(x, target)[..., 0]
