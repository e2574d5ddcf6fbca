"""Layer statistics for information bottleneck attribution.

IBA (Schulz, Sixt, Tombari & Landgraf, *Restricting the Flow: Information Bottlenecks for Attribution*,
ICLR 2020) replaces a hidden layer's activations ``R`` by noise drawn from ``N(mu_R, sigma_R)``, the
per-element distribution of ``R`` over the data. This module estimates those statistics with a forward hook
on any named layer (a timm CNN stage, a ViT block, a layer of our small CNN; looked up and hooked by the core's
:mod:`lit_xai.layers`, re-exported here) using Welford's running
algorithm in its batched form (Chan, Golub & LeVeque, 1979), stopping each forward pass at the layer so that
the rest of the network is never run. The per-channel statistics of the input are estimated in the same pass:
InputIBA (Zhang et al., NeurIPS 2021) needs them for the noise it puts on the input.

The result, :class:`LayerStatistics`, is a plain bundle of tensors with ``to_dict``/``from_dict`` so that an
explainer can store it next to the model's weights (loadable with ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.layers import forward_to_layer, layer_output, resolve_layer

__all__ = [
    "LayerStatistics",
    "WelfordEstimator",
    "estimate_layer_statistics",
    "forward_to_layer",
    "layer_output",
    "resolve_layer",
]


class WelfordEstimator:
    """Running per-element mean and standard deviation over the leading (sample) dimension.

    Batches are merged with the parallel form of Welford's algorithm in float64, so the estimate equals
    ``torch.mean``/``torch.std`` (unbiased) over all samples seen, whatever the batch sizes.
    Also counts how often each element is non-zero (IBA's "active neurons").
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None
        self._nonzero: Tensor | None = None
        self.minimum = float("inf")

    def update(self, x: Tensor) -> None:
        """Add a batch of samples ``(n, *shape)``."""
        x = x.detach().double()
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        nonzero = (x != 0).sum(0)
        if self._mean is None:
            self._mean, self._m2, self._nonzero = batch_mean, batch_m2, nonzero
        else:
            if x.shape[1:] != self._mean.shape:
                raise ValueError(
                    f"sample shape changed from {tuple(self._mean.shape)} to {tuple(x.shape[1:])}"
                )
            total = self.count + n
            delta = batch_mean - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
            self._nonzero = self._nonzero + nonzero
        self.count += n
        self.minimum = min(self.minimum, float(x.min()))

    def mean(self) -> Tensor:
        """Mean over all samples seen (float64)."""
        if self._mean is None:
            raise ValueError("no samples seen yet")
        return self._mean

    def std(self) -> Tensor:
        """Unbiased standard deviation over all samples seen (float64)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a standard deviation, got {self.count}")
        return (self._m2 / (self.count - 1)).sqrt()

    def active_fraction(self) -> Tensor:
        """Fraction of samples in which each element was non-zero."""
        return self._nonzero.double() / max(self.count, 1)


@dataclass
class LayerStatistics:
    """What the bottleneck needs to know about a layer and the input: estimated on training data.

    Attributes:
        layer: name of the layer in ``model.named_modules()``.
        input_shape: ``(C, H, W)`` (or the per-sample shape) of the inputs the statistics were estimated on.
        mean: per-element mean of the layer's output, shaped like one sample's output.
        std: per-element standard deviation of the layer's output.
        active: per-element fraction of samples where the output is non-zero.
        nonnegative: whether the output was never negative (post-ReLU): noisy outputs are then clamped at 0.
        input_mean: per-channel mean of the input.
        input_std: per-channel standard deviation of the input.
        num_samples: how many samples the estimate is based on.
    """

    layer: str
    input_shape: tuple[int, ...]
    mean: Tensor
    std: Tensor
    active: Tensor
    nonnegative: bool
    input_mean: Tensor
    input_std: Tensor
    num_samples: int

    def to_dict(self) -> dict:
        """Tensors and plain values only, so ``torch.load(..., weights_only=True)`` reads it back."""
        return {
            "layer": self.layer,
            "input_shape": list(self.input_shape),
            "mean": self.mean.cpu(),
            "std": self.std.cpu(),
            "active": self.active.cpu(),
            "nonnegative": self.nonnegative,
            "input_mean": self.input_mean.cpu(),
            "input_std": self.input_std.cpu(),
            "num_samples": self.num_samples,
        }

    @classmethod
    def from_dict(cls, state: dict) -> LayerStatistics:
        """Inverse of :meth:`to_dict`."""
        missing = {f for f in cls.__dataclass_fields__ if f not in state}
        if missing:
            raise ValueError(f"not a LayerStatistics state: missing {sorted(missing)}")
        return cls(**{**state, "input_shape": tuple(state["input_shape"])})

    def to(self, device: torch.device | str) -> LayerStatistics:
        """A copy with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return LayerStatistics(**moved)

    def check_input(self, x: Tensor) -> None:
        """Raise a ``ValueError`` unless ``x`` is a batch of inputs shaped like the estimation data."""
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != tuple(self.input_shape):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected inputs of shape (B, {', '.join(map(str, self.input_shape))}) like the data the layer "
                f"statistics were estimated on, got {shape}; resize the images or re-estimate the statistics"
            )


def _inputs(batch) -> Tensor:
    if isinstance(batch, dict):
        return batch["input"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


@torch.no_grad()
def estimate_layer_statistics(
    model: nn.Module,
    layer: str,
    data: Iterable,
    num_samples: int = 10_000,
    min_samples: int = 1000,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LayerStatistics:
    """Estimate the statistics of ``layer``'s output (and of the input channels) over ``data``.

    Args:
        model: the network (put in eval mode by the caller; its mode is not changed here).
        layer: the layer's name in ``model.named_modules()``.
        data: an iterable of batches: dicts with ``"input"`` (our DataModules), ``(x, y)`` tuples or tensors.
        num_samples: stop after this many samples (IBA recommends 10,000).
        min_samples: raise if the data holds fewer samples (IBA warns below 1,000).
        device: where to run the model; defaults to the device of its first parameter.
        progress: show a progress bar.

    Returns:
        The :class:`LayerStatistics` (float32 tensors).
    """
    module = resolve_layer(model, layer)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else None  # None: keep each batch where it is
    features, inputs = WelfordEstimator(), WelfordEstimator()
    input_shape: tuple[int, ...] | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_samples, desc=f"statistics of {layer}", unit="sample")
    for batch in data:
        x = _inputs(batch)[: num_samples - features.count]
        x = x.to(device)
        if input_shape is None:
            input_shape = tuple(x.shape[1:])
        features.update(forward_to_layer(model, module, x))
        # Per-channel input statistics: pixels of every sample are draws from the channel's distribution.
        inputs.update(x.transpose(0, 1).flatten(1).T if x.dim() > 2 else x)
        if bar is not None:
            bar.update(len(x))
        if features.count >= num_samples:
            break
    if bar is not None:
        bar.close()
    if features.count < max(min_samples, 2):
        raise ValueError(
            f"only {features.count} samples were available to estimate the statistics of {layer!r}, fewer than "
            f"min_samples={min_samples}; pass more data (IBA recommends 10,000 samples) or lower min_samples"
        )
    return LayerStatistics(
        layer=layer,
        input_shape=input_shape,
        mean=features.mean().float(),
        std=features.std().float(),
        active=features.active_fraction().float(),
        nonnegative=features.minimum >= 0,
        input_mean=inputs.mean().float(),
        input_std=inputs.std().float(),
        num_samples=features.count,
    )
