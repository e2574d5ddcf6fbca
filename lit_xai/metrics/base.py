"""The base of the metric classes: per-image scores accumulated as moments, DDP-correct.

Each explanation metric produces one or more scores per image. The class keeps, for every score, its sum and its
sum of squares, plus one image count: three ``"sum"``-reduced states that add up across batches and across
processes, so ``compute()`` under DDP equals the single-process result and memory does not grow with the dataset.
The same moments give each mean a Student-t confidence interval (:meth:`ExplanationMetric.summary`), clipped to the
values the score can take (:meth:`ExplanationMetric.value_ranges`): a t-interval is symmetric, so over a few images an
AUC of 0.97 would otherwise be reported as reaching 1.05. States are float64 so that the variance
``E[x^2] - E[x]^2`` stays accurate over many images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_xai.metrics.functional.confidence import confidence_interval_from_moments

__all__ = ["ExplanationMetric", "PROBABILITY_LINKS"]

#: Links whose values are probabilities, so that scores read from them are bounded.
PROBABILITY_LINKS = ("softmax", "sigmoid")


class ExplanationMetric(Metric):
    """Accumulates named per-image scores; ``compute()`` returns their means.

    Subclasses pass the score names to ``__init__`` and call :meth:`_accumulate` from ``update``.

    Args:
        names: the scores this metric reports, in order.
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``, ``process_group``).
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        if len(set(names)) != len(names):
            raise ValueError(
                f"score names must be unique, got {list(names)} (e.g. a fraction or size given twice)"
            )
        self.names = list(names)
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # States are numbered rather than named after the scores: score names may hold characters ('.', '@')
        # that are not valid attribute names.
        for i in range(len(self.names)):
            self.add_state(f"sum_{i}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"sum_sq_{i}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, scores: Mapping[str, Tensor]) -> None:
        """Add a batch of per-image scores: every name maps to a ``(B,)`` tensor."""
        batch = None
        for i, name in enumerate(self.names):
            values = scores[name].detach().to(torch.float64).reshape(-1)
            if batch is None:
                batch = values.numel()
            elif values.numel() != batch:
                raise ValueError(
                    f"score {name!r} has {values.numel()} values, expected one per image ({batch})"
                )
            setattr(self, f"sum_{i}", getattr(self, f"sum_{i}") + values.sum().to(self.count.device))
            setattr(
                self,
                f"sum_sq_{i}",
                getattr(self, f"sum_sq_{i}") + values.square().sum().to(self.count.device),
            )
        self.count += batch or 0

    def compute(self) -> dict[str, Tensor]:
        """Means of every score over all images seen (on every process), as float32 scalars."""
        count = self.count
        return {name: (getattr(self, f"sum_{i}") / count).float() for i, name in enumerate(self.names)}

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """The values each score can take, ``{name: (lowest, highest)}``; scores left out are unbounded."""
        return {}

    def summary(self, confidence: float = 0.95) -> dict[str, dict[str, float]]:
        """Mean, standard deviation and ``confidence`` t-interval of every score, synchronised across processes.

        ``low`` and ``high`` are clipped to the score's range (:meth:`value_ranges`); ``half_width`` is the
        unclipped t-interval's.

        Returns:
            ``{name: {"mean", "std", "half_width", "low", "high", "count"}}`` as Python floats, ready for a JSON
            report.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute, should_unsync=True
        ):
            moments = [
                (getattr(self, f"sum_{i}").item(), getattr(self, f"sum_sq_{i}").item())
                for i in range(len(self.names))
            ]
            count = self.count.item()
        ranges = self.value_ranges()
        summaries = {}
        for name, (total, total_sq) in zip(self.names, moments):
            summary = confidence_interval_from_moments(total, total_sq, count, confidence)
            if name in ranges:
                lowest, highest = ranges[name]
                summary["low"], summary["high"] = max(summary["low"], lowest), min(summary["high"], highest)
            summaries[name] = summary
        return summaries
