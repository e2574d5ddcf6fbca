"""Completeness and soundness (Gupta et al., NeurIPS 2022) as a :class:`torchmetrics.Metric`, DDP-correct.

See :func:`lit_xai.metrics.functional.completeness_soundness`. The maps of every evaluated label are needed, since
soundness asks whether the maps of the labels the network does *not* predict also certify those labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.functional.completeness_soundness import MODES, completeness_soundness

__all__ = ["CompletenessSoundness"]


class CompletenessSoundness(ExplanationMetric):
    """Mean completeness of the explained label's map, mean and worst soundness of the other labels' maps.

    Args:
        masker: removes players (``mode="soft"`` needs baseline filling).
        mode: ``"insertion"`` (real-valued maps, scored by their insertion curve) or ``"soft"`` (maps are
            keep-fractions in ``[0, 1]``).
        labels: the class indices the maps explain (default: all, ``0..K-1``).
        num_steps: points of the insertion curves (``None``: every player count).
        epsilon, alpha, beta: the floors of the completeness and soundness ratios (the authors' 0.1, 1, 0.1).
        batch_size: masked inputs per forward pass.
        seed: seeds the tie-breaking afresh at every update, so results do not depend on the batching.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(model, x, maps, target=None)`` with ``maps`` ``(B, d, K)``; ``compute()`` returns
    ``{"completeness", "soundness", "worst_soundness"}`` (all higher is better).
    """

    higher_is_better = True

    def __init__(
        self,
        masker: Masker,
        mode: str = "insertion",
        labels: Sequence[int] | None = None,
        num_steps: int | None = None,
        epsilon: float = 0.1,
        alpha: float = 1.0,
        beta: float = 0.1,
        batch_size: int = 256,
        seed: int | None = 0,
        **kwargs,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        for name, value in (("epsilon", epsilon), ("alpha", alpha), ("beta", beta)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        super().__init__(["completeness", "soundness", "worst_soundness"], **kwargs)
        self.masker = masker
        self.mode = mode
        self.labels = None if labels is None else [int(label) for label in labels]
        self.num_steps = num_steps
        self.epsilon, self.alpha, self.beta = float(epsilon), float(alpha), float(beta)
        self.batch_size = batch_size
        self.seed = seed

    def update(self, model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int | None = None) -> None:
        """Score a batch: ``maps`` ``(B, d, K)``, one per label; ``target`` the explained label (None: predicted)."""
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        result = completeness_soundness(
            model,
            self.masker,
            x,
            maps,
            target,
            self.labels,
            self.mode,
            self.num_steps,
            self.epsilon,
            self.alpha,
            self.beta,
            self.batch_size,
            generator,
        )
        self._accumulate({name: result[name] for name in self.names})
