"""Integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017).

``IG_i(x) = (x_i - x'_i) * integral_0^1 df(x' + a (x - x')) / dx_i da`` for a baseline ``x'``. The integral is a
quadrature over ``steps`` points on the straight path: Gauss-Legendre (default, as captum; exact for polynomials of
degree ``2 * steps - 1``) or a Riemann sum (left, right, middle, trapezoid). The attributions satisfy
*completeness*: they add up to ``f(x) - f(x')`` up to the quadrature error, and exactly for a linear model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lit_xai.attribution.base import preserved_model_state, resolve_target, select_target
from lit_xai.attribution.gradients import GradientAttribution, gradient_mode, input_gradient, prepare_input
from lit_xai.players import Players

__all__ = ["IntegratedGradients", "integration_rule", "INTEGRATION_METHODS"]

INTEGRATION_METHODS = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)


def integration_rule(method: str, steps: int) -> tuple[Tensor, Tensor]:
    """Points ``a`` in ``[0, 1]`` and weights (summing to one) of a quadrature rule with ``steps`` points (float64)."""
    if method not in INTEGRATION_METHODS:
        raise ValueError(
            f"unknown integration method {method!r}; choose one of {', '.join(INTEGRATION_METHODS)}"
        )
    if steps < 1 or (method == "riemann_trapezoid" and steps < 2):
        raise ValueError(f"steps must be at least {2 if method == 'riemann_trapezoid' else 1}, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]; map to [0, 1]
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    if method == "riemann_trapezoid":
        points = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return points, weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    points = (torch.arange(steps, dtype=torch.float64) + offset) / steps
    return points, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


class IntegratedGradients(GradientAttribution):
    """Integrated gradients along the straight path from a baseline to the input.

    Args:
        model: the network to explain.
        players: the players of the input.
        steps: quadrature points on the path.
        method: ``"gausslegendre"`` (default) or ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"``.
        baseline: the reference input: ``None`` for zeros, a number, or a tensor broadcastable to the input batch
            (e.g. one image ``(C, H, W)`` or a per-row baseline ``(B, C, H, W)``).
        internal_batch_size: at most this many path points (over all inputs) per forward pass; at least one point
            of the whole batch is evaluated at once.
        **kwargs: ``link``, ``create_graph`` (see :class:`~lit_xai.attribution.gradients.GradientAttribution`).
    """

    name = "integrated_gradients"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        steps: int = 50,
        method: str = "gausslegendre",
        baseline: Tensor | float | None = None,
        internal_batch_size: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(model, players, **kwargs)
        self.points, self.weights = integration_rule(method, int(steps))
        if internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be at least 1, got {internal_batch_size}")
        if baseline is not None and not isinstance(baseline, (int, float, Tensor)):
            raise ValueError(f"baseline must be None, a number or a tensor, got {type(baseline).__name__}")
        self.steps = int(steps)
        self.method = method
        self.baseline = baseline
        self.internal_batch_size = int(internal_batch_size)

    def baseline_for(self, x: Tensor) -> Tensor:
        """The baseline broadcast to the shape of ``x``."""
        if self.baseline is None:
            return torch.zeros_like(x)
        if not isinstance(self.baseline, Tensor):
            return torch.full_like(x, float(self.baseline))
        baseline = self.baseline.to(device=x.device, dtype=x.dtype)
        try:
            return baseline.expand_as(x)
        except RuntimeError as err:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} cannot be broadcast to the input {tuple(x.shape)}; "
                f"pass one input's shape {tuple(x.shape[1:])} or the batch's shape"
            ) from err

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        batch = x.shape[0]
        points = self.points.to(device=x.device, dtype=x.dtype)
        weights = self.weights.to(device=x.device, dtype=x.dtype)
        with gradient_mode():
            inputs = prepare_input(x)
            baseline = self.baseline_for(inputs)
            if target is None:
                with torch.no_grad():
                    target = resolve_target(None, batch, self.model(inputs))
            target = resolve_target(target, batch)
            delta = inputs - baseline
            shape = (-1, *([1] * x.dim()))
            total = torch.zeros_like(inputs)
            points_per_pass = max(1, self.internal_batch_size // batch)
            for a, w in zip(points.split(points_per_pass), weights.split(points_per_pass)):
                path = (baseline.unsqueeze(0) + a.view(shape) * delta.unsqueeze(0)).flatten(0, 1)
                grads = input_gradient(self.model, path, target.repeat(len(a)), self.link, self.create_graph)
                total = total + (grads.view(len(a), *x.shape) * w.view(shape)).sum(dim=0)
            return self._finish(delta * total)

    def completeness_gap(self, x: Tensor, attributions: Tensor, target: Tensor | int | None = None) -> Tensor:
        """``sum(attributions) - (f(x) - f(baseline))`` per input: how far the quadrature is from exact.

        Args:
            x: the inputs that were explained.
            attributions: their attributions, per player ``(B, d)`` or per element (any shape with ``B`` rows).
            target: the explained classes (``None``: predicted).
        """
        self.check_input(x)
        with torch.no_grad(), preserved_model_state(self.model):
            baseline = self.baseline_for(x)
            logits = self.model(x)
            target = resolve_target(target, x.shape[0], logits)
            gain = select_target(self.link(logits), target) - select_target(
                self.link(self.model(baseline)), target
            )
        return attributions.detach().flatten(1).sum(dim=1) - gain
