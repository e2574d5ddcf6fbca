"""Sobol attribution (Fel, Cadène, Chalvidal, Cord, Vigouroux & Serre, "Look at the Variance! Efficient Black-box
Explanations with Sobol-based Sensitivity Analysis", NeurIPS 2021).

The players' presence is made a random variable: quasi-Monte-Carlo masks (:func:`lit_xai.sensitivity.sobol_design`,
``N (d + 2)`` of them) keep each player by a fraction in ``[0, 1]`` and the total-order Sobol index of each player
(Jansen's estimator, :func:`lit_xai.sensitivity.jansen_total_indices`) measures the share of the output's variance
that involves it, alone or with others. The paper's perturbation is inpainting with a baseline: ``m x + (1 - m) b``;
that *soft* path exists only for baseline filling (:meth:`lit_xai.masking.BaselineFill.fill_soft`). With another
masker (token dropping) the masks are thresholded at 1/2 and the indices are those of binary presence. Total
indices are non-negative: they rank players by how much the output depends on them, not by the sign of the effect.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lit_xai.attribution.perturbation import PerturbationAttribution
from lit_xai.players import Players
from lit_xai.sensitivity import jansen_total_indices, sobol_design

__all__ = ["SobolAttribution"]


class SobolAttribution(PerturbationAttribution):
    """Total Sobol indices per player, ``(B, d)`` (``(B, d, C)`` from :meth:`attribute_all`).

    Args:
        model: the network to explain.
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        num_designs: ``N``; ``N (d + 2)`` evaluations per input (the authors use 32, a power of two).
        soft: fractional masks (needs a masker with ``fill_soft``: :class:`~lit_xai.masking.BaselineFill`);
            ``False`` thresholds them at 1/2 (any masker); ``None`` picks soft where the masker can.
        scramble: scramble the Sobol sequence (the authors do not).
        seed: seed of the scrambling.
        link: scale of the values (``"softmax"`` by default).
        batch_size: at most this many masked inputs per forward pass.
    """

    name = "sobol"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        num_designs: int = 32,
        soft: bool | None = None,
        scramble: bool = False,
        seed: int | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        if num_designs < 2:
            raise ValueError(f"num_designs must be at least 2 (a power of two, e.g. 32), got {num_designs}")
        can_soften = callable(getattr(self.masker, "fill_soft", None))
        if soft and not can_soften:
            raise ValueError(
                f"soft masks blend players with a baseline, which {type(self.masker).__name__} cannot do: use "
                f"BaselineFill, or soft=False for binary masks"
            )
        self.soft = can_soften if soft is None else bool(soft)
        self.num_designs = int(num_designs)
        self.scramble, self.seed = bool(scramble), seed

    def masks(self) -> Tensor:
        """The ``(N (d + 2), d)`` masks: fractions when soft, else booleans."""
        points = sobol_design(self.players.num_players, self.num_designs, self.scramble, self.seed)
        return points.float() if self.soft else points >= 0.5

    def _all_classes(self, x: Tensor) -> Tensor:
        masks = self.masks().to(x.device)
        masker = self.masker.fill_soft if self.soft else None
        outputs = self._outputs(x, masks, masker)
        return jansen_total_indices(outputs, self.num_designs).to(outputs.dtype)
