"""Insertion/deletion AUC as a :class:`torchmetrics.Metric` (Petsiuk et al., RISE, BMVC 2018), DDP-correct.

See :func:`lit_xai.metrics.functional.insertion_deletion` for the definition. Besides the per-image AUCs (mean and
confidence interval), the metric keeps the summed curves, so :meth:`InsertionDeletion.curves` gives the mean
insertion and deletion curves over the whole dataset for plots at the cost of ``2 (S + 1)`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.base import PROBABILITY_LINKS, ExplanationMetric
from lit_xai.metrics.functional.insertion_deletion import insertion_deletion, player_counts

__all__ = ["InsertionDeletion"]


class InsertionDeletion(ExplanationMetric):
    """Mean insertion and deletion AUC over a dataset.

    Args:
        masker: removes players, ``masker(model, x, keep) -> logits``.
        num_steps: ``None`` for all ``d + 1`` player counts, or ``S <= d`` evenly spaced steps.
        link: applied to the logits before reading the target class (``"softmax"``: probabilities).
        batch_size: masked inputs per forward pass.
        seed: seeds the tie-breaking between equal attributions, afresh at every update, so the result does not
            depend on how the data is split into batches or processes; ``None`` uses the global random state.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(model, x, attributions, target)``; ``compute()`` returns ``{"insertion_auc", "deletion_auc"}``.
    """

    higher_is_better = None  # insertion: higher; deletion: lower

    def __init__(
        self,
        masker: Masker,
        num_steps: int | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
        seed: int | None = 0,
        **kwargs,
    ) -> None:
        super().__init__(["insertion_auc", "deletion_auc"], **kwargs)
        self.masker = masker
        self.num_steps = num_steps
        self.link = link
        self.batch_size = batch_size
        self.seed = seed
        num_points = player_counts(masker.num_players, num_steps).numel()
        self.add_state(
            "insertion_curve_sum", torch.zeros(num_points, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "deletion_curve_sum", torch.zeros(num_points, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """AUCs of probability curves lie in [0, 1]; on other links they are unbounded."""
        bounded = isinstance(self.link, str) and self.link in PROBABILITY_LINKS
        return {name: (0.0, 1.0) for name in self.names} if bounded else {}

    def update(self, model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor | int) -> None:
        """Evaluate the curves of a batch of explanations and add them up."""
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        result = insertion_deletion(
            model, self.masker, x, attributions, target, self.num_steps, self.link, self.batch_size, generator
        )
        self._accumulate(result)
        device = self.insertion_curve_sum.device
        self.insertion_curve_sum += result["insertion_curve"].sum(dim=0).to(device, torch.float64)
        self.deletion_curve_sum += result["deletion_curve"].sum(dim=0).to(device, torch.float64)

    def curves(self) -> dict[str, Tensor]:
        """Mean curves over all images on all processes: ``{"fractions", "insertion_curve", "deletion_curve"}``."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute, should_unsync=True
        ):
            insertion = (self.insertion_curve_sum / self.count).float().clone()
            deletion = (self.deletion_curve_sum / self.count).float().clone()
        fractions = player_counts(self.masker.num_players, self.num_steps, insertion.device).float()
        return {
            "fractions": fractions / self.masker.num_players,
            "insertion_curve": insertion,
            "deletion_curve": deletion,
        }
