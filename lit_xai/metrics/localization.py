"""Localisation scores as a :class:`torchmetrics.Metric`, DDP-correct.

See :mod:`lit_xai.metrics.functional.localization` for the pointing game, relevance mass accuracy and the effective
heat ratio AUC (including the exact EHR definition).
"""

from __future__ import annotations

from torch import Tensor

from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.functional.localization import localization
from lit_xai.players import Players

__all__ = ["Localization"]


class Localization(ExplanationMetric):
    """Mean pointing game, relevance mass accuracy and effective heat ratio AUC against human annotations.

    Args:
        players: the players of per-player attributions, to spread them over a pixel (or column) annotation.
        threshold: annotation values ``>= threshold`` form the annotated region.
        base_threshold: the effective heat ratio's lower cut-off on the normalised heat.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(attributions, annotation)``; ``compute()`` returns ``{"pointing_game", "relevance_mass", "ehr_auc"}``.
    """

    higher_is_better = True

    def __init__(
        self, players: Players | None = None, threshold: float = 0.5, base_threshold: float = 0.1, **kwargs
    ) -> None:
        super().__init__(["pointing_game", "relevance_mass", "ehr_auc"], **kwargs)
        self.players = players
        self.threshold = threshold
        self.base_threshold = base_threshold

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """Hit rates, shares of the mass and AUCs: [0, 1]."""
        return {name: (0.0, 1.0) for name in self.names}

    def update(self, attributions: Tensor, annotation: Tensor) -> None:
        """Score a batch of attribution maps against their annotations."""
        self._accumulate(
            localization(attributions, annotation, self.players, self.threshold, self.base_threshold)
        )
