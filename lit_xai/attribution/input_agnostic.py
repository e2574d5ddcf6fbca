"""Input-agnostic saliency (Akhtar & Jalwana, "Rethinking Interpretation: Input-Agnostic Saliency Mapping of Deep
Visual Classifiers", AAAI 2023, arXiv 2303.17836).

A class-level map computed without data: independent points drawn from an unrestricted distribution are nudged,
all by one shared perturbation ``rho``, toward the minimum of the classification loss of class ``l``; the gradient
information of every nudge is accumulated in ``rho``, which is projected onto a norm ball after each step. What
survives is the input pattern the model associates with ``l`` everywhere in input space, not in one image. The
paper proposes it for finding backdoor triggers: a patch that maps anything to one class stands out.

    rho <- 0
    repeat ``steps`` times:
        x_1..x_n ~ the distribution (fresh each step)
        g = grad_rho  mean_i CE(f(x_i + rho), l)
        rho <- Psi(rho - eta g / ||g||_2)          Psi: projection onto {||rho||_p <= radius}
    map = rho / max|rho|                             scaling to [-1, 1] (positive: evidence for l)

Refinement, the paper's last stage, is taken here as an optional Gaussian smoothing of ``rho`` (``refine_sigma``)
followed by the same scaling; the paper's exact refinement could not be consulted when this was written, so the
default leaves it off and the map is the scaled projection.

A linear model shows what the map is: the input gradient of the loss is ``-(W_l - sum_k p_k W_k)``, so ``rho``
grows along the class's weight row against the others' (for two classes exactly along ``W_l - W_other``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import PixelAttribution, make_generator, resolve_target
from lit_xai.masking import gaussian_blur
from lit_xai.players import Players

__all__ = ["InputAgnosticSaliency"]

DISTRIBUTIONS = ("uniform", "normal")
NORMS = ("l2", "linf")


class InputAgnosticSaliency(PixelAttribution):
    """Class-level maps, the same for every input of a class.

    Args:
        model: the network to explain.
        players: the players of the input.
        steps: nudges of the shared perturbation.
        num_points: independent points per step.
        step_size: ``eta``, the length of each normalised step.
        radius: the bound of ``||rho||`` (the norm ball it is projected onto).
        norm: ``"l2"`` or ``"linf"``.
        distribution: ``"uniform"`` on ``[low, high]`` or ``"normal"`` with mean ``(low + high) / 2`` and standard
            deviation ``(high - low) / 4``.
        low, high: the range of the distribution (the data's range, e.g. 0 and 1).
        refine_sigma: standard deviation (pixels) of the refining smoothing; ``None``: no refinement.
        seed: seeds the points, so a map is reproducible.

    ``attribute(x, target)`` gives each input its target class's map pooled to players ``(B, d)``; ``x`` only
    supplies the input shape and device. :meth:`class_map` gives the pixel map ``(C, H, W)`` of one class.
    """

    name = "input_agnostic"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        steps: int = 200,
        num_points: int = 32,
        step_size: float = 0.05,
        radius: float = 1.0,
        norm: str = "l2",
        distribution: str = "uniform",
        low: float = 0.0,
        high: float = 1.0,
        refine_sigma: float | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, players)
        if norm not in NORMS or distribution not in DISTRIBUTIONS:
            raise ValueError(f"norm must be one of {NORMS} and distribution one of {DISTRIBUTIONS}")
        if steps < 1 or num_points < 1 or step_size <= 0 or radius <= 0 or not high > low:
            raise ValueError("steps, num_points, step_size and radius must be positive, and high above low")
        self.steps, self.num_points, self.step_size, self.radius = (
            int(steps),
            int(num_points),
            step_size,
            radius,
        )
        self.norm, self.distribution, self.low, self.high = norm, distribution, float(low), float(high)
        self.refine_sigma = refine_sigma
        self.seed = seed

    def class_map(
        self, label: int, input_shape: tuple[int, ...], device: torch.device | str = "cpu"
    ) -> Tensor:
        """The map of class ``label`` for inputs of shape ``input_shape`` (one input, no batch dimension), scaled to
        ``[-1, 1]``."""
        generator = make_generator(self.seed, "cpu")
        rho = torch.zeros(input_shape, device=device, requires_grad=True)
        target = torch.full((self.num_points,), int(label), device=device)
        with torch.enable_grad():
            for _ in range(self.steps):
                points = self._sample((self.num_points, *input_shape), generator).to(device)
                loss = F.cross_entropy(self.model(points + rho), target)
                (gradient,) = torch.autograd.grad(loss, rho)
                with torch.no_grad():
                    norm = gradient.norm()
                    if norm > 0:  # a flat loss gives no direction: rho stays where it is
                        rho -= self.step_size * gradient / norm
                    rho.copy_(self._project(rho))
        result = rho.detach()
        if self.refine_sigma is not None and result.dim() == 3:
            result = gaussian_blur(result.unsqueeze(0), self.refine_sigma).squeeze(0)
        scale = result.abs().max()
        return result / scale if scale > 0 else result

    def _sample(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        if self.distribution == "uniform":
            return self.low + (self.high - self.low) * torch.rand(shape, generator=generator)
        return (self.low + self.high) / 2 + (self.high - self.low) / 4 * torch.randn(
            shape, generator=generator
        )

    def _project(self, rho: Tensor) -> Tensor:
        """``Psi``: the closest point of the norm ball (a rescaling for l2, clipping for l-infinity)."""
        if self.norm == "linf":
            return rho.clamp(-self.radius, self.radius)
        length = float(rho.norm())
        return rho * min(1.0, self.radius / length) if length > 0 and math.isfinite(length) else rho

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        if target is None:
            with torch.no_grad():
                target = resolve_target(None, x.shape[0], self.model(x))
        target = resolve_target(target, x.shape[0]).to(x.device)
        maps = {
            label: self.class_map(label, tuple(x.shape[1:]), x.device) for label in target.unique().tolist()
        }
        return torch.stack([maps[label] for label in target.tolist()]).to(x.dtype)
