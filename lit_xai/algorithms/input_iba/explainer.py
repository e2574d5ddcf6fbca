"""InputIBA: ``attribute(x, target) -> (B, H, W)`` pixel maps, batched over images.

Zhang, Khakzar, Li, Farshad, Kim & Navab, *Fine-Grained Neural Network Explanation by Identifying Input Features
with Predictive Information*, NeurIPS 2021, in three stages: (1) IBA's feature bottleneck (:mod:`.iba`), (2) a
per-image Wasserstein GAN that learns an input mask whose features match the feature bottleneck's distribution
(:mod:`.prior`), (3) a bottleneck on the input whose KL is taken against that learned prior; its ``lambda``,
averaged over channels, is the map.

All stages process a batch of images together, each image with its own parameters and its own random stream
(seeded by ``seed`` and the image's position in the call), so ``batch_size=1`` reproduces the batched maps.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from lit_xai.algorithms.input_iba.iba import GAN_STAGE, IBA, INPUT_STAGE
from lit_xai.algorithms.input_iba.prior import GANConfig, GenerativePrior
from lit_xai.algorithms.input_iba.resume import ResumeState, run_fingerprint
from lit_xai.algorithms.input_iba.statistics import LayerStatistics

__all__ = ["BottleneckConfig", "GANConfig", "IBA", "InputIBA", "upsample_bits"]

#: InputIBA's settings of its two bottlenecks where they differ from IBA's (Zhang et al.: beta 20, 60 input steps).
FEATURE_DEFAULTS = {"beta": 20.0}
INPUT_DEFAULTS = {"beta": 20.0, "steps": 60}


def _config(cls, value, **defaults):
    if isinstance(value, cls):
        return value
    return cls(**{**defaults, **(value or {})})


def _to_device(value, device: torch.device):
    """Tensors in (nested) dicts moved to ``device``; other values as they are."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


class InputIBA(IBA):
    """Input bottleneck with a learned generative prior (Zhang et al., NeurIPS 2021).

    Args:
        model: the classifier (image input ``(B, C, H, W)``).
        layer: the feature bottleneck's layer (VGG16 ``"features.17"`` in the paper; ``"features"`` for our
            SmallCNN; a middle ``layerN`` for timm ResNets).
        statistics: precomputed :class:`LayerStatistics` (else call :meth:`estimate`).
        feature: :class:`BottleneckConfig` (or a dict of its fields) of the feature stage; paper: ``beta=20``.
        gan: :class:`GANConfig` (or a dict) of the generative prior.
        input: :class:`BottleneckConfig` (or a dict) of the input stage; paper: ``beta=20``, 60 steps.
        batch_size: images processed together in every stage.
        seed: seed of all per-image randomness.
        progress: show progress bars.
        num_prefix_tokens: for ViT layers (see :class:`IBA`).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        statistics: LayerStatistics | None = None,
        feature: BottleneckConfig | dict | None = None,
        gan: GANConfig | dict | None = None,
        input: BottleneckConfig | dict | None = None,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
        num_prefix_tokens: int | None = None,
    ) -> None:
        feature = _config(BottleneckConfig, feature, **FEATURE_DEFAULTS)
        super().__init__(
            model, layer, statistics, batch_size, seed, progress, num_prefix_tokens, **asdict(feature)
        )
        self.gan_config = _config(GANConfig, gan)
        self.input_config = _config(BottleneckConfig, input, **INPUT_DEFAULTS)
        self.last: dict[str, Tensor] = {}

    def explain(
        self,
        x: Tensor,
        target: Tensor | int | None = None,
        state_dir: str | Path | None = None,
        save_every: int = 10,
    ) -> dict:
        """All stages' maps: ``feature`` (IBA bits, upsampled), ``prior`` (GAN mask) and ``input`` (the result),
        each ``(B, H, W)``; ``generator``, the learned priors' weights (``mask_logit`` ``(B, C, H, W)``,
        ``noise_mean`` and ``noise_std`` ``(B, C)``); and the GAN's per-step ``history`` of the last chunk.

        Args:
            x: images ``(B, C, H, W)``.
            target: classes ``(B,)`` or one int; ``None`` explains the predicted class.
            state_dir: keep the progress here (finished chunks, the GAN state every ``save_every`` steps) so that a
                killed call, made again with the same arguments, resumes and ends bit for bit where an
                uninterrupted one would (:mod:`.resume`); the folder is removed when the call returns.
            save_every: GAN steps between two saves of its state (with ``state_dir``).
        """
        if x.dim() != 4:
            raise ValueError(f"InputIBA explains images (B, C, H, W), got shape {tuple(x.shape)}")
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        store = None
        if state_dir is not None:
            store = ResumeState(state_dir, self._fingerprint(x, target))
        chunks = [
            self._explain_chunk(xb, tb, indices, store, save_every)
            for xb, tb, indices in self._chunks(x, target)
        ]
        result: dict = {key: torch.cat([c[key] for c in chunks]) for key in ("feature", "prior", "input")}
        result["generator"] = {
            key: torch.cat([c["generator"][key] for c in chunks])
            for key in ("mask_logit", "noise_mean", "noise_std")
        }
        result["history"] = chunks[-1]["history"]
        if store is not None:
            store.clear()
        return result

    def _fingerprint(self, x: Tensor, target) -> str:
        """What the maps depend on: images, targets, model weights, layer, statistics, settings and seed."""
        settings = (self.layer, self.seed, self.batch_size, self.num_prefix_tokens)
        configs = (self.config, self.gan_config, self.input_config)
        target = "predicted" if target is None else torch.as_tensor(target)
        return run_fingerprint(x, target, self.model, settings, configs, self._stats().to_dict())

    def _explain_chunk(
        self, x: Tensor, target: Tensor, indices: range, store: ResumeState | None, save_every: int
    ) -> dict:
        """The three stages for one chunk of images, resumed from ``store`` where it holds their progress."""
        first = indices.start
        if store is not None and (done := store.load("chunk", first)) is not None:
            return _to_device(done, x.device)
        saved = store.load("prior", first) if store is not None else None
        if saved is None:
            feature_bn, features, _ = self.fit(x, target, indices)
        else:  # the feature stage of this chunk finished before the kill: rebuild it as it was
            features = self.clean_features(x)
            feature_bn = self._bottleneck(features.shape, self.config, x.device)
            with torch.no_grad():
                feature_bn.alpha.copy_(saved["feature_alpha"])
        bits = upsample_bits(self.feature_map(feature_bn, features), x.shape[-2:])

        def checkpoint(gan: GenerativePrior) -> None:
            if gan.step % save_every == 0 or gan.step == gan.config.total_steps:
                store.save(
                    "prior", first, {"feature_alpha": feature_bn.alpha.detach(), "gan": gan.training_state()}
                )

        gan = self._generative_prior(x, features, feature_bn, bits, indices)
        if saved is not None:
            gan.load_training_state(saved["gan"])
        gan.fit(self.progress, after_step=checkpoint if store is not None else None)
        prior = gan.prior()
        lam = self.fit_input(x, target, prior, indices)
        generator = gan.generator
        result = {
            "feature": bits,
            "prior": prior.mean(1),
            "input": lam.mean(1),
            "generator": {
                "mask_logit": generator.mask_logit.detach(),
                "noise_mean": generator.noise_mean.detach(),
                "noise_std": generator.noise_std.detach(),
            },
            "history": gan.history,
        }
        if store is not None:
            store.finish_chunk(first, result)
        return result

    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """The input bottleneck's ``lambda`` averaged over channels, ``(B, H, W)`` in ``[0, 1]``."""
        return self.explain(x, target)["input"]

    def fit_prior(
        self,
        x: Tensor,
        features: Tensor,
        feature_bn: PerImageBottleneck,
        bits: Tensor,
        indices: Iterable[int],
    ) -> tuple[Tensor, list[dict[str, float]]]:
        """Train the per-image generative priors; returns ``(mask (B, C, H, W) in [0, 1], GAN history)``."""
        gan = self._generative_prior(x, features, feature_bn, bits, indices).fit(self.progress)
        return gan.prior(), gan.history

    def _generative_prior(
        self,
        x: Tensor,
        features: Tensor,
        feature_bn: PerImageBottleneck,
        bits: Tensor,
        indices: Iterable[int],
    ) -> GenerativePrior:
        """The untrained GAN of a chunk, its mask started at the feature map."""
        stats = self._stats().to(x.device)
        generators = image_generators(self.seed, indices, GAN_STAGE, x.device)
        # The authors start the mask logits at the feature map in bits per pixel; bits per pixel depend on the
        # layer's size, so we rescale the map to logits in [-init_logit, init_logit] (0.02..0.98 for 4).
        peak = bits.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
        init = torch.sigmoid(self.gan_config.init_logit * (2 * bits / peak - 1))
        return GenerativePrior(
            self.model, self.module, x, features, feature_bn, init, stats.input_mean,
            stats.input_std, generators, self.gan_config, self.num_prefix_tokens,
        )  # fmt: skip

    def fit_input(self, x: Tensor, target: Tensor, prior: Tensor, indices: Iterable[int]) -> Tensor:
        """Fit the input bottleneck against the prior; returns its ``lambda`` ``(B, C, H, W)``."""
        cfg = self.input_config
        stats = self._stats().to(x.device)
        view = (-1,) + (1,) * (x.dim() - 2)  # per channel, broadcast over pixels
        bottleneck = PerImageBottleneck(
            x.shape,
            mean=stats.input_mean.view(view),
            std=stats.input_std.clamp_min(cfg.min_std).view(view),
            init_alpha=cfg.init_alpha,
            sigma=cfg.sigma,
            prior=prior,
        )
        generators = image_generators(self.seed, indices, INPUT_STAGE, x.device)

        def logits_fn(eps: Tensor) -> tuple[Tensor, Tensor]:
            z, kl = bottleneck(x, eps)
            return self.model(z), kl

        optimise_bottleneck(
            bottleneck, logits_fn, target, generators, x.shape[1:], cfg.beta, cfg.steps, cfg.lr, cfg.copies,
            self.progress, desc="input bottleneck",
        )  # fmt: skip
        # The authors report sigmoid(alpha) (before smoothing) as the map.
        return torch.sigmoid(bottleneck.alpha).detach()
