"""HSIC attribution (Novello, Fel & Vigouroux, "Making Sense of Dependence: Efficient Black-box Explanations Using
Dependence Measure", NeurIPS 2022).

``N`` binary masks from a thresholded Sobol sequence (:func:`lit_xai.sensitivity.binary_design`; binary, so token
dropping works) and the Hilbert-Schmidt independence criterion between each player's presence and the output
(:func:`lit_xai.sensitivity.hsic_scores`: Dirac input kernel, RBF output kernel of median width). The authors
report it as faithful as Sobol or RISE at a fraction of their evaluations (default ``N = 500`` for any number of
players). Scores are non-negative dependence measures, not signed effects.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.perturbation import PerturbationAttribution
from lit_xai.players import Players
from lit_xai.sensitivity import binary_design, hsic_scores

__all__ = ["HSICAttribution"]


class HSICAttribution(PerturbationAttribution):
    """HSIC per player, ``(B, d)`` (``(B, d, C)`` from :meth:`attribute_all`), from ``num_designs`` evaluations.

    Args:
        model: the network to explain.
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        num_designs: masks per input (the authors' default 500).
        scramble: scramble the Sobol sequence.
        seed: seed of the scrambling.
        link: scale of the values (``"softmax"`` by default).
        batch_size: at most this many masked inputs per forward pass.
    """

    name = "hsic"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        num_designs: int = 500,
        scramble: bool = False,
        seed: int | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        if num_designs < 4:
            raise ValueError(f"num_designs must be at least 4, got {num_designs}")
        self.num_designs = int(num_designs)
        self.scramble, self.seed = bool(scramble), seed

    def masks(self) -> Tensor:
        """The ``(N, d)`` binary masks."""
        return binary_design(self.players.num_players, self.num_designs, self.scramble, self.seed)

    def _all_classes(self, x: Tensor) -> Tensor:
        masks = self.masks().to(x.device)
        outputs = self._outputs(x, masks)
        # One input at a time: the output Gram matrices are (C, N, N) each.
        scores = torch.stack([hsic_scores(masks, outputs[b]) for b in range(x.shape[0])])
        return scores.to(outputs.dtype)
