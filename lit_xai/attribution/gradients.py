"""Gradient attributions: vanilla gradient, gradient x input and SmoothGrad.

- Vanilla gradient / saliency (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR-W 2014):
  ``|d f_c / d x|``; the sign can be kept with ``abs=False``.
- Gradient x input (Shrikumar et al., "Not Just a Black Box", 2016): ``x * d f_c / d x``; for a linear model this
  is each feature's exact contribution ``w * x``.
- SmoothGrad (Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017): the gradient averaged over
  noisy copies ``x + N(0, sigma^2)``, ``sigma = noise_level * (max(x) - min(x))`` per input.

All are batched over inputs (and noise samples), take gradients with respect to the input only and can keep the
graph (``create_graph=True``) so the attribution can sit inside a training loss (e.g. "right for the right
reasons"). Pixel values are summed over image channels and then over each player's pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import PixelAttribution, make_generator, resolve_target, select_target
from lit_xai.links import get_link
from lit_xai.players import Players

__all__ = [
    "GradientAttribution",
    "Gradient",
    "GradientXInput",
    "SmoothGrad",
    "gradient_mode",
    "input_gradient",
    "output_gradient",
]


@contextlib.contextmanager
def gradient_mode() -> Iterator[None]:
    """Let autograd run even when called from ``torch.no_grad()`` or ``torch.inference_mode()`` (validation loops)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def prepare_input(x: Tensor) -> Tensor:
    """An input autograd can differentiate with respect to, still attached to ``x``'s graph when ``x`` has one."""
    if x.is_inference():
        x = x.clone()  # inference tensors cannot enter autograd; a clone made outside inference mode can
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    return x


def output_gradient(
    outputs: Tensor, x: Tensor, target: Tensor | None = None, create_graph: bool = False
) -> Tensor:
    """Gradient of ``outputs`` (computed from ``x``, which must require grad) with respect to ``x``.

    Rows are independent (each sample's output depends only on its own input, true in eval mode), so
    differentiating the batch sum gives every sample's gradient at once.

    Args:
        outputs: ``(B, K)`` outputs of a forward pass on ``x`` (logits, or any link of them).
        x: the input of that forward pass.
        target: ``(B,)`` classes whose output is differentiated; ``None`` differentiates the sum over all classes
            (on log-probabilities that is RRR's ``∂/∂x Σ_k log p_k``).
        create_graph: keep the graph of the gradient, so a loss on it can be backpropagated to the parameters
            (double backpropagation, as VisFIS and RRR need); the forward graph is then kept too, so ``outputs``
            can still be used in a loss.

    Returns:
        The gradient, shaped like ``x``.
    """
    if not x.requires_grad:
        raise ValueError("x must require grad: call x.requires_grad_(True) before the forward pass")
    selected = outputs.sum() if target is None else select_target(outputs, target).sum()
    (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph, retain_graph=create_graph)
    return grad


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int | None = None,
    link: str | Callable[[Tensor], Tensor] = "logits",
    create_graph: bool = False,
) -> Tensor:
    """Gradient of ``link(model(x))[target]`` with respect to the input, shaped like ``x``.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (validation loops). ``x`` itself is not
    modified: when it does not require grad a differentiable copy is used; when it does (an input that is itself
    computed, e.g. a point on integrated gradients' path), the gradient is taken with respect to it.

    Args:
        model: the network; ``model(x)`` returns logits ``(B, C)``.
        x: the inputs.
        target: the class per input (``(B,)`` or an int); ``None`` takes the class the model predicts.
        link: the output differentiated (``"logits"``, ``"softmax"``, ``"log_softmax"`` or a callable on logits).
        create_graph: keep the graph of the gradient (see :func:`output_gradient`).
    """
    with gradient_mode():
        inputs = prepare_input(x)
        logits = model(inputs)
        target = resolve_target(target, inputs.shape[0], logits)
        return output_gradient(get_link(link)(logits), inputs, target, create_graph=create_graph)


class GradientAttribution(PixelAttribution):
    """Shared options of the gradient methods.

    Args:
        model: the network to explain.
        players: the players of the input.
        link: the output whose gradient is taken: ``"logits"`` (default, as captum), ``"softmax"``,
            ``"log_softmax"`` or a callable on the logits.
        create_graph: keep the autograd graph so the attributions can be differentiated again (for training
            losses); by default they are detached.
    """

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        link: str | Callable[[Tensor], Tensor] = "logits",
        create_graph: bool = False,
    ) -> None:
        super().__init__(model, players)
        self.link = get_link(link)
        self.create_graph = bool(create_graph)

    def _finish(self, values: Tensor) -> Tensor:
        return values if self.create_graph else values.detach()

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            return super()._attribute(x, target)


class Gradient(GradientAttribution):
    """Vanilla gradient (saliency map).

    Args:
        abs: return the gradient's magnitude ``|df/dx|`` (default, as Simonyan et al. and captum's ``Saliency``) or,
            with ``abs=False``, the signed gradient. Image channels are summed after taking the magnitude.
        **kwargs: ``link``, ``create_graph`` (see :class:`GradientAttribution`).
    """

    name = "gradient"

    def __init__(self, model: nn.Module, players: Players, abs: bool = True, **kwargs) -> None:  # noqa: A002
        super().__init__(model, players, **kwargs)
        self.abs = bool(abs)

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            grads = input_gradient(self.model, prepare_input(x), target, self.link, self.create_graph)
            return self._finish(grads.abs() if self.abs else grads)


class GradientXInput(GradientAttribution):
    """Gradient times input, ``x * df/dx`` (signed); for a linear model, ``w * x`` exactly."""

    name = "gradient_x_input"

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            inputs = prepare_input(x)
            grads = input_gradient(self.model, inputs, target, self.link, self.create_graph)
            return self._finish(grads * inputs)


class SmoothGrad(GradientAttribution):
    """SmoothGrad: the signed gradient averaged over Gaussian-noised copies of the input.

    The signed gradients are averaged, so their noise cancels (the paper's estimator); ``abs=True`` returns the
    magnitude of the average, as the paper visualises it.

    Args:
        num_samples: noisy copies per input.
        noise_level: noise standard deviation relative to each input's value range, ``max(x) - min(x)`` (the paper
            recommends 0.1-0.2).
        abs: return the magnitude of the averaged gradient.
        seed: seed of the noise; every call with the same inputs gives the same result. ``None`` uses the global
            random state.
        internal_batch_size: at most this many noisy inputs per forward pass (at least one copy of the batch).
        **kwargs: ``link``, ``create_graph`` (see :class:`GradientAttribution`).
    """

    name = "smoothgrad"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        num_samples: int = 50,
        noise_level: float = 0.15,
        abs: bool = False,  # noqa: A002
        seed: int | None = 0,
        internal_batch_size: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(model, players, **kwargs)
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if noise_level < 0:
            raise ValueError(f"noise_level must be non-negative, got {noise_level}")
        if internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be at least 1, got {internal_batch_size}")
        self.num_samples = int(num_samples)
        self.noise_level = float(noise_level)
        self.abs = bool(abs)
        self.seed = seed
        self.internal_batch_size = int(internal_batch_size)

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        generator = make_generator(self.seed, x.device)
        batch = x.shape[0]
        with gradient_mode():
            inputs = prepare_input(x)
            if target is None:
                with torch.no_grad():
                    target = resolve_target(None, batch, self.model(inputs))
            target = resolve_target(target, batch)
            flat = inputs.detach().flatten(1)
            sigma = self.noise_level * (flat.max(dim=1).values - flat.min(dim=1).values)
            sigma = sigma.view(1, batch, *([1] * (x.dim() - 1)))
            total = torch.zeros_like(inputs)
            copies_per_pass = max(1, self.internal_batch_size // batch)
            for start in range(0, self.num_samples, copies_per_pass):
                k = min(copies_per_pass, self.num_samples - start)
                noise = torch.randn((k, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
                noisy = (inputs.unsqueeze(0) + sigma * noise).flatten(0, 1)
                grads = input_gradient(self.model, noisy, target.repeat(k), self.link, self.create_graph)
                total = total + grads.view(k, *x.shape).sum(dim=0)
            mean = total / self.num_samples
            return self._finish(mean.abs() if self.abs else mean)
