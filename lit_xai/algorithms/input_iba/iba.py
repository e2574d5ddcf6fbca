"""IBA: a per-sample information bottleneck at a hidden layer, ``attribute(x, target) -> (B, H, W)`` bits per pixel.

Schulz, Sixt, Tombari & Landgraf, *Restricting the Flow: Information Bottlenecks for Attribution*, ICLR 2020: the
layer's activations are replaced by ``lambda R + (1 - lambda) eps`` and ``lambda`` is fitted per image to keep the
prediction with as little information as possible; the map is the information (bits) that flows through each
location, upsampled to the input. It is also the first stage of InputIBA (:mod:`.explainer`).

Images are processed in batches, each image with its own parameters and its own random stream (seeded by ``seed``
and the image's position in the call), so ``batch_size=1`` reproduces the batched maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_xai.algorithms.input_iba.bottleneck import (
    BottleneckConfig,
    PerImageBottleneck,
    image_generators,
    optimise_bottleneck,
    upsample_bits,
)
from lit_xai.algorithms.input_iba.statistics import LayerStatistics, estimate_layer_statistics
from lit_xai.algorithms.input_iba.torch_model import feature_grid
from lit_xai.io import atomic_save, safe_torch_load
from lit_xai.layers import layer_output, resolve_layer

__all__ = ["IBA"]

#: Each stage of IBA and InputIBA draws from its own per-image random streams.
FEATURE_STAGE, GAN_STAGE, INPUT_STAGE = 0, 1, 2


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no weight gradients while explaining; the caller's modes and flags come back after."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags.items():
            p.requires_grad_(flag)


class IBA:
    """Per-sample information bottleneck at a hidden layer (Schulz et al., ICLR 2020).

    Args:
        model: the classifier.
        layer: name of the layer in ``model.named_modules()`` (e.g. ``"features"``, ``"layer3"``, ``"blocks.6"``).
        statistics: precomputed :class:`LayerStatistics`; otherwise call :meth:`estimate` first.
        batch_size: images optimised together (memory grows with ``batch_size * copies``).
        seed: seed of the per-image noise.
        progress: show progress bars.
        num_prefix_tokens: for ViT layers, class/register tokens to drop from the map (``None``: inferred).
        **config: :class:`BottleneckConfig` fields (``beta``, ``steps``, ``lr``, ``copies``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        statistics: LayerStatistics | None = None,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        num_prefix_tokens: int | None = None,
        **config,
    ) -> None:
        self.model = model
        self.layer = layer
        self.module = resolve_layer(model, layer)
        self.config = BottleneckConfig(**config)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.num_prefix_tokens = num_prefix_tokens
        self.statistics = statistics
        if statistics is not None and statistics.layer != layer:
            raise ValueError(f"the statistics were estimated for layer {statistics.layer!r}, not {layer!r}")
        self._expand_at_layer = True

    # ---------------------------------------------------------------- statistics and checkpoints
    def estimate(self, data: Iterable, num_samples: int = 10_000, min_samples: int = 1000) -> LayerStatistics:
        """Estimate the layer's statistics on training data (see :func:`estimate_layer_statistics`)."""
        with _frozen(self.model):
            self.statistics = estimate_layer_statistics(
                self.model, self.layer, data, num_samples, min_samples, progress=self.progress
            )
        return self.statistics

    def save(self, path: str | Path) -> None:
        """Write the layer, config and statistics (atomically; readable with ``weights_only=True``)."""
        state = {"layer": self.layer, "config": asdict(self.config), "statistics": self._stats().to_dict()}
        atomic_save(state, Path(path))

    def load(self, path: str | Path, config: bool = True) -> IBA:
        """Load statistics (and, with ``config``, the bottleneck's settings) written by :meth:`save` for this model
        and layer."""
        state = safe_torch_load(path)
        if state.get("layer") != self.layer:
            raise ValueError(f"{path} holds statistics of layer {state.get('layer')!r}, not {self.layer!r}")
        if config:
            self.config = BottleneckConfig(**state["config"])
        self.statistics = LayerStatistics.from_dict(state["statistics"])
        return self

    def _stats(self) -> LayerStatistics:
        if self.statistics is None:
            raise ValueError("no layer statistics: call .estimate(train_loader) first or pass statistics=...")
        return self.statistics

    # ---------------------------------------------------------------- the bottleneck
    def _bottleneck(self, shape: tuple[int, ...], config: BottleneckConfig, device) -> PerImageBottleneck:
        stats = self._stats().to(device)
        return PerImageBottleneck(
            shape,
            mean=stats.mean,
            std=stats.std.clamp_min(config.min_std),
            init_alpha=config.init_alpha,
            sigma=config.sigma,
            active=(stats.active > config.active_threshold).float(),
            nonnegative=stats.nonnegative,
        )

    def fit(self, x: Tensor, target: Tensor, indices: Iterable[int], config: BottleneckConfig | None = None):
        """Fit the feature bottleneck of a batch; returns ``(bottleneck, clean features (B, ...), history)``."""
        config = config or self.config
        indices = list(indices)
        b, k = len(x), config.copies
        features = self.clean_features(x)
        bottleneck = self._bottleneck(features.shape, config, x.device)
        generators = image_generators(self.seed, indices, FEATURE_STAGE, x.device)
        holder: dict[str, Tensor] = {}

        def hook(module, args, output):
            z, holder["kl"] = bottleneck(output, holder["eps"])
            return z

        def logits_fn(eps: Tensor) -> tuple[Tensor, Tensor]:
            holder["eps"] = eps
            handle = self.module.register_forward_hook(hook)
            try:
                if self._expand_at_layer:
                    # Fast path: run the layers before the bottleneck once per image, not once per copy.
                    try:
                        logits = self.model(x)
                        if logits.shape[0] == b * k:
                            return logits, holder["kl"]
                    except torch.OutOfMemoryError:
                        raise  # transient, and the slow path needs `copies` times more memory: not a reason to switch
                    except RuntimeError:
                        pass
                    self._expand_at_layer = False  # e.g. a skip connection around the layer: copy the inputs
                return self.model(x.repeat_interleave(k, 0)), holder["kl"]
            finally:
                handle.remove()

        history = optimise_bottleneck(
            bottleneck, logits_fn, target, generators, features.shape[1:], config.beta, config.steps,
            config.lr, k, self.progress, desc=f"IBA at {self.layer}",
        )  # fmt: skip
        return bottleneck, features, history

    def clean_features(self, x: Tensor) -> Tensor:
        """The layer's activations for ``x`` (the layers after it are not run)."""
        with torch.no_grad(), layer_output(self.module, stop=True) as captured:
            self.model(x)
        return captured["output"].detach()

    def feature_map(self, bottleneck: PerImageBottleneck, features: Tensor) -> Tensor:
        """Information per location of the layer, in bits: ``(B, h, w)``."""
        with torch.no_grad():
            kl = bottleneck.kl(features)
        if kl.dim() == 3:  # ViT tokens (B, N, D): one location per patch token
            return feature_grid(kl, self.num_prefix_tokens).sum(1) / math.log(2)
        if kl.dim() != 4:
            raise ValueError(f"cannot make a spatial map from features of shape {tuple(kl.shape)}")
        return kl.sum(1) / math.log(2)

    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Bits per input pixel ``(B, H, W)`` (each location's bits spread over the pixels it covers).

        Args:
            x: images ``(B, C, H, W)`` shaped like the estimation data.
            target: classes ``(B,)`` or one int; ``None`` explains the predicted class.
        """
        maps = []
        for xb, tb, indices in self._chunks(x, target):
            bottleneck, features, _ = self.fit(xb, tb, indices)
            maps.append(upsample_bits(self.feature_map(bottleneck, features), x.shape[-2:]))
        return torch.cat(maps)

    def _chunks(self, x: Tensor, target) -> Iterator[tuple[Tensor, Tensor, range]]:
        stats = self._stats()
        stats.check_input(x)
        if not torch.isfinite(x).all():
            raise ValueError("the input contains NaN or infinite values")
        with _frozen(self.model):
            if target is None:
                with torch.no_grad():
                    target = self.model(x).argmax(-1)
            target = torch.as_tensor(target, device=x.device).long().expand(len(x))
            for start in range(0, len(x), self.batch_size):
                stop = min(start + self.batch_size, len(x))
                with torch.enable_grad():
                    yield x[start:stop], target[start:stop], range(start, stop)
