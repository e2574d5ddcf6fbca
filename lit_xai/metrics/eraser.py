"""ERASER sufficiency and comprehensiveness as a :class:`torchmetrics.Metric` (DeYoung et al., ACL 2020).

See :func:`lit_xai.metrics.functional.eraser`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.base import PROBABILITY_LINKS, ExplanationMetric
from lit_xai.metrics.functional.eraser import eraser, rationale_sizes

__all__ = ["Eraser"]


class Eraser(ExplanationMetric):
    """Mean sufficiency (lower is better) and comprehensiveness (higher is better), overall and per fraction.

    Args:
        masker: removes players, ``masker(model, x, keep) -> logits``.
        fractions: rationale sizes as fractions of the players.
        link: applied to the logits (``"softmax"``: probabilities, as in ERASER).
        batch_size: masked inputs per forward pass.
        seed: seeds the tie-breaking between equal attributions afresh at every update.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(model, x, attributions, target)``; ``compute()`` returns ``{"sufficiency", "comprehensiveness"}``
    (means over the fractions) and ``{"sufficiency_<f>", "comprehensiveness_<f>"}`` per fraction (``f`` as
    written by ``format(f, "g")``, e.g. ``sufficiency_0.1``).
    """

    higher_is_better = None

    def __init__(
        self,
        masker: Masker,
        fractions: Sequence[float] = (0.1, 0.25, 0.5),
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
        seed: int | None = 0,
        **kwargs,
    ) -> None:
        rationale_sizes(fractions, masker.num_players)  # validate early, before any data arrives
        fractions = [float(f) for f in fractions]
        names = ["sufficiency", "comprehensiveness"]
        names += [f"{kind}_{f:g}" for kind in ("sufficiency", "comprehensiveness") for f in fractions]
        super().__init__(names, **kwargs)
        self.fractions = fractions
        self.masker = masker
        self.link = link
        self.batch_size = batch_size
        self.seed = seed

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """Differences of two probabilities lie in [-1, 1]; on other links they are unbounded."""
        bounded = isinstance(self.link, str) and self.link in PROBABILITY_LINKS
        return {name: (-1.0, 1.0) for name in self.names} if bounded else {}

    def update(self, model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor | int) -> None:
        """Score a batch of explanations."""
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        result = eraser(
            model, self.masker, x, attributions, target, self.fractions, self.link, self.batch_size, generator
        )
        scores = {"sufficiency": result["sufficiency"], "comprehensiveness": result["comprehensiveness"]}
        for kind in ("sufficiency", "comprehensiveness"):
            per_fraction = result[f"{kind}_per_fraction"]
            scores.update({f"{kind}_{f:g}": per_fraction[:, j] for j, f in enumerate(self.fractions)})
        self._accumulate(scores)
