"""Epoch means of per-batch values that are exact under DDP, whatever each process's number of samples.

``self.log(name, value, sync_dist=True, batch_size=n)`` averages over processes the per-process sums and the
per-process sample counts; with the gloo backend Lightning 2.6 averages the integer counts by integer division, so
269 validation samples on two processes become a count of 134 and ``val/loss`` comes out 0.4% too large. (It went
unseen while the distributed sampler padded every process to the same count.) :func:`log_exact_mean` accumulates
the weighted sum and the count in a :class:`SampleMean` metric instead, whose float states are summed across
processes: the epoch value is the mean over every sample seen, the same on one process as on several.
(``torchmetrics.MeanMetric`` would either drop NaN values or, with ``nan_strategy="disable"``, ignore the weights.)
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = ["SampleMean", "log_exact_mean"]

_ATTRIBUTE = "exact_means"


class SampleMean(Metric):
    """Mean over samples of per-batch means: ``sum(mean_b * n_b) / sum(n_b)``; NaN and inf pass through."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, batch_size: int) -> None:
        self.total += value.detach().to(torch.float64).sum() * batch_size
        self.count += batch_size

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def log_exact_mean(
    module: L.LightningModule, name: str, value: Tensor, batch_size: int, **log_kwargs: Any
) -> None:
    """Log the epoch mean of ``value`` (a batch mean over ``batch_size`` samples) under ``name``, exactly.

    The metric behind ``name`` is created on first use and kept in ``module.exact_means`` (metrics hold no
    weights and are not saved in checkpoints); Lightning computes and resets it at the end of each epoch.

    Args:
        module: the LightningModule logging.
        name: the logged key, e.g. ``"val/loss"``.
        value: a scalar, the mean over the batch's samples.
        batch_size: the samples the batch mean is over.
        **log_kwargs: for ``module.log`` (``prog_bar`` ...).
    """
    means = getattr(module, _ATTRIBUTE, None)
    if means is None:
        means = nn.ModuleDict()
        setattr(module, _ATTRIBUTE, means)
    key = name.replace("/", ":").replace(".", ":")  # a valid ModuleDict key for any logged name
    if key not in means:
        means[key] = SampleMean().to(value.device)
    metric = means[key]
    metric.update(value, batch_size)
    module.log(name, metric, metric_attribute=f"{_ATTRIBUTE}.{key}", **log_kwargs)
