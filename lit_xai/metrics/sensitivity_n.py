"""Sensitivity-n as a :class:`torchmetrics.Metric` (Ancona et al., ICLR 2018), DDP-correct.

See :func:`lit_xai.metrics.functional.sensitivity_n`. The random subsets come from ``seed`` afresh at every update and
are shared by all images, so each image's score, and therefore the mean, does not depend on the batching or on the
number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.functional.sensitivity_n import check_subset_sizes, sensitivity_n

__all__ = ["SensitivityN"]


class SensitivityN(ExplanationMetric):
    """Mean sensitivity-n correlation per subset size, and averaged over the sizes.

    Args:
        masker: removes players, ``masker(model, x, keep) -> logits``.
        subset_sizes: the sizes ``n`` (each in ``1..d-1``).
        num_subsets: random subsets per size.
        link: applied to the logits (``"softmax"``, ``"logits"``, ...).
        correlation: ``"pearson"`` or ``"spearman"``.
        batch_size: masked inputs per forward pass.
        seed: seeds the subsets (``None``: the global random state, batch-dependent).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(model, x, attributions, target)``; ``compute()`` returns ``{"sensitivity_n"}`` (the mean over sizes)
    and ``{"sensitivity_n_<n>"}`` for every size.
    """

    higher_is_better = True

    def __init__(
        self,
        masker: Masker,
        subset_sizes: int | Sequence[int],
        num_subsets: int = 100,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        correlation: str = "pearson",
        batch_size: int = 256,
        seed: int | None = 0,
        **kwargs,
    ) -> None:
        sizes = check_subset_sizes(subset_sizes, masker.num_players)
        super().__init__(["sensitivity_n"] + [f"sensitivity_n_{n}" for n in sizes], **kwargs)
        self.subset_sizes = sizes
        self.masker = masker
        self.num_subsets = num_subsets
        self.link = link
        self.correlation = correlation
        self.batch_size = batch_size
        self.seed = seed

    def value_ranges(self) -> dict[str, tuple[float, float]]:
        """Pearson correlations: [-1, 1]."""
        return {name: (-1.0, 1.0) for name in self.names}

    def update(self, model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor | int) -> None:
        """Score a batch of explanations."""
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        scores = sensitivity_n(
            model,
            self.masker,
            x,
            attributions,
            target,
            self.subset_sizes,
            num_subsets=self.num_subsets,
            link=self.link,
            correlation=self.correlation,
            batch_size=self.batch_size,
            generator=generator,
        )
        named = {"sensitivity_n": scores.mean(dim=1)}
        named.update({f"sensitivity_n_{n}": scores[:, j] for j, n in enumerate(self.subset_sizes)})
        self._accumulate(named)
