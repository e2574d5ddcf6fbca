"""The per-sample information bottleneck, batched over images.

IBA (Schulz et al., ICLR 2020) replaces activations ``R`` by ``Z = lambda * R + (1 - lambda) * eps`` with
``eps ~ N(mu_R, sigma_R)`` and ``lambda = sigmoid(alpha)`` (optionally smoothed by a Gaussian), and minimises
``CE(target) + beta * KL(P(Z|R) || Q(Z))`` over ``alpha`` for each image. The KL is the information (in nats)
that flows through each element. InputIBA (Zhang et al., NeurIPS 2021) puts the same bottleneck on the input
and takes the KL against a *learned* prior; both cases share the closed form in :func:`bottleneck_kl`.

Batching: every image has its own ``alpha`` (one tensor with a leading image dimension) and the loss is a sum
over images, so one Adam step updates each image exactly as a one-image run would (Adam is per element). The
noise for image ``i`` comes from its own generator, seeded from the run's seed and ``i`` alone, so batched and
one-at-a-time runs draw the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.masking import gaussian_blur

__all__ = [
    "BottleneckConfig",
    "PerImageBottleneck",
    "bottleneck_kl",
    "image_generators",
    "optimise_bottleneck",
    "per_image_normal",
    "upsample_bits",
]


@dataclass
class BottleneckConfig:
    """Hyperparameters of one bottleneck (IBA's defaults; InputIBA uses ``beta=20`` and 60 input steps).

    Attributes:
        beta: weight of the information term (mean KL over an image's elements, in nats).
        steps: Adam steps per image.
        lr: Adam learning rate.
        copies: noisy copies of each image per step.
        init_alpha: initial ``alpha``; ``sigmoid(5)`` lets about 99.3% of the signal through at first.
        sigma: Gaussian smoothing of ``lambda`` (0 for none).
        min_std: lower bound of the noise standard deviation (avoids dividing by ~0 for dead elements).
        active_threshold: elements non-zero in at most this fraction of the data are treated as dead.
    """

    beta: float = 10.0
    steps: int = 10
    lr: float = 1.0
    copies: int = 10
    init_alpha: float = 5.0
    sigma: float = 1.0
    min_std: float = 0.01
    active_threshold: float = 0.01

    def __post_init__(self) -> None:
        if self.beta < 0 or self.lr <= 0 or self.sigma < 0 or self.min_std <= 0:
            raise ValueError(f"need beta >= 0, lr > 0, sigma >= 0 and min_std > 0, got {self}")
        if self.steps < 0 or self.copies < 1:
            raise ValueError(f"need steps >= 0 and copies >= 1, got {self}")


def image_generators(
    seed: int, indices: Sequence[int], stage: int, device: torch.device
) -> list[torch.Generator]:
    """One random generator per image, seeded from ``(seed, image index, stage)`` only."""
    generators = []
    for index in indices:
        state = np.random.SeedSequence([seed, int(index), stage]).generate_state(1, dtype=np.uint64)[0]
        generators.append(torch.Generator(device=device).manual_seed(int(state >> 1)))
    return generators


def per_image_normal(generators: Sequence[torch.Generator], shape: Sequence[int], device) -> Tensor:
    """Standard normal noise ``(len(generators), *shape)``; row ``i`` is drawn from ``generators[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in generators])


def smoothing_radius(sigma: float) -> int:
    """Taps on each side of IBA's Gaussian smoothing: Schulz et al.'s kernel has ``2 * round(2 sigma) + 1`` taps."""
    return int(round(2 * sigma))


def bottleneck_kl(r_norm: Tensor, lam: Tensor, one_minus_lam: Tensor, prior: Tensor | None = None) -> Tensor:
    """Element-wise ``KL(P(Z|R) || Q(Z))`` in nats, in units normalised by the noise statistics.

    With ``r = (R - mu) / sigma``, ``P(Z|R) = N(lambda r, (1 - lambda)^2)``. The prior is the bottleneck's own
    distribution with ``lambda`` gated by a mask ``m`` in ``[0, 1]``: ``Q = N(m lambda r, (1 - m lambda)^2)``.
    ``m = 0`` gives IBA's prior ``N(0, 1)`` (the noise distribution); InputIBA uses the generator's mask as ``m``:
    where the prior says a feature matters its information is cheap. Closed form of two Gaussians:
    ``log(s_q / s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2``.

    Args:
        r_norm: normalised activations.
        lam: ``lambda``.
        one_minus_lam: ``1 - lambda``, computed without cancellation by the caller.
        prior: the mask ``m`` (broadcastable), or ``None`` for ``m = 0``.
    """
    # Where 1 - lambda underflows the exact KL is infinite (a point mass); clamping keeps it finite.
    s_p = one_minus_lam.clamp_min(torch.finfo(one_minus_lam.dtype).tiny)
    if prior is None:
        s_q, diff = torch.ones_like(s_p), lam * r_norm
    else:
        s_q = (1 - prior) + prior * s_p  # = 1 - m * lambda, written so that it never cancels
        diff = lam * (1 - prior) * r_norm
    return torch.log(s_q) - torch.log(s_p) + (s_p**2 + diff**2) / (2 * s_q**2) - 0.5


class PerImageBottleneck(nn.Module):
    """Bottleneck parameters ``alpha`` for a batch of images, and the noisy ``Z`` they define.

    Args:
        shape: ``(B, *sample_shape)``: one ``alpha`` per element of each image's activations (or input).
        mean: noise mean, broadcastable to one sample (``(C, H, W)``, ``(C, 1, 1)``, ...).
        std: noise standard deviation, same shape rules.
        init_alpha: initial ``alpha`` (5: ``lambda`` about 0.993, almost everything passes at first).
        sigma: Gaussian smoothing of ``lambda`` over the spatial axes (only for ``(B, C, H, W)``; 0 for none).
        active: optional 0/1 mask of elements that ever fire; inactive ones are set to 0 and cost nothing.
        nonnegative: clamp ``Z`` at 0 (the activations were post-ReLU).
        prior: optional InputIBA prior mask ``m`` shaped like ``alpha``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        mean: Tensor,
        std: Tensor,
        init_alpha: float = 5.0,
        sigma: float = 1.0,
        active: Tensor | None = None,
        nonnegative: bool = False,
        prior: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full(tuple(shape), float(init_alpha), device=mean.device))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("active", active)
        self.register_buffer("prior", prior)
        self.sigma = sigma if len(shape) == 4 else 0.0
        self.nonnegative = nonnegative

    def lambdas(self) -> tuple[Tensor, Tensor]:
        """``(lambda, 1 - lambda)``, smoothed; the second from ``sigmoid(-alpha)`` for precision near 1."""
        # The blur maps 1 - a to 1 - blur(a), so smoothing sigmoid(-alpha) gives 1 - lambda without cancellation.
        radius = smoothing_radius(self.sigma)
        return (
            gaussian_blur(torch.sigmoid(self.alpha), self.sigma, radius),
            gaussian_blur(torch.sigmoid(-self.alpha), self.sigma, radius),
        )

    def kl(self, r: Tensor) -> Tensor:
        """Element-wise KL ``(B, *sample_shape)`` for the clean activations ``r`` of the B images."""
        lam, one_minus = self.lambdas()
        kl = bottleneck_kl((r - self.mean) / self.std, lam, one_minus, self.prior)
        return kl if self.active is None else kl * self.active

    def forward(self, r: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Sample ``Z`` for every noisy copy.

        Args:
            r: clean activations, ``(B, *s)`` or ``(B * K, *s)`` (K identical copies per image).
            eps: standard normal noise ``(B, K, *s)``.

        Returns:
            ``(z (B * K, *s), kl (B, *s))``.
        """
        b, k = eps.shape[:2]
        lam, one_minus = self.lambdas()
        r = r.view(b, -1, *r.shape[1:])
        z = lam.unsqueeze(1) * r + one_minus.unsqueeze(1) * (self.mean + self.std * eps)
        kl = bottleneck_kl((r[:, 0] - self.mean) / self.std, lam, one_minus, self.prior)
        if self.active is not None:
            z, kl = z * self.active, kl * self.active
        if self.nonnegative:
            z = z.clamp_min(0)
        return z.flatten(0, 1), kl


def optimise_bottleneck(
    bottleneck: PerImageBottleneck,
    logits_fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    generators: Sequence[torch.Generator],
    noise_shape: Sequence[int],
    beta: float,
    steps: int,
    lr: float,
    copies: int,
    progress: bool = False,
    desc: str = "bottleneck",
) -> list[dict[str, float]]:
    """Fit every image's ``alpha`` with Adam on ``sum_i [CE_i + beta * mean KL_i]``.

    Args:
        bottleneck: the parameters to fit (``alpha``, leading dimension = images).
        logits_fn: maps the noise ``(B, copies, *noise_shape)`` to ``(logits (B * copies, classes), kl (B, ...))``.
        target: classes ``(B,)``.
        generators: one per image (see :func:`image_generators`).
        noise_shape: shape of one sample's noise.
        beta: weight of the information term (mean KL over the elements of one image, as in IBA).
        steps: optimisation steps.
        lr: Adam learning rate.
        copies: noisy copies of each image per step (IBA's ``batch_size``).
        progress: show a progress bar.
        desc: its label.

    Returns:
        Per-step history of the summed losses (``ce``, ``kl``, ``loss``, averaged over images).
    """
    optimizer = torch.optim.Adam([bottleneck.alpha], lr=lr)
    steps_iter: Sequence[int] | object = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc=desc, leave=False)
    device = bottleneck.alpha.device
    b = len(generators)
    history = []
    for _ in steps_iter:
        eps = per_image_normal(generators, (copies, *noise_shape), device)
        logits, kl = logits_fn(eps)
        ce = (
            F.cross_entropy(logits, target.repeat_interleave(copies), reduction="none")
            .view(b, copies)
            .mean(1)
        )
        info = kl.flatten(1).mean(1)
        loss = (ce + beta * info).sum()
        # Only alpha needs a gradient: autograd.grad skips the model's weight gradients.
        (grad,) = torch.autograd.grad(loss, [bottleneck.alpha])
        bottleneck.alpha.grad = grad
        optimizer.step()
        history.append({"ce": ce.mean().item(), "kl": info.mean().item(), "loss": loss.item() / b})
    bottleneck.alpha.grad = None
    return history


def upsample_bits(bits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``(B, h, w)`` bits to ``(B, H, W)``, scaled so the total stays the same."""
    h, w = bits.shape[-2:]
    up = F.interpolate(bits.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    return up.squeeze(1) * (h * w) / (size[0] * size[1])
