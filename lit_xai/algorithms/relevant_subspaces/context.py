"""Activations and their context vectors at a hidden layer, collected in one pass over the data.

Chormai, Herrmann, Müller & Montavon ("Disentangled Explanations of Neural Network Predictions by Finding Relevant
Subspaces", IEEE TPAMI 2024) write the relevance of a layer's activation vector ``a`` (one spatial position of a
feature map, or one ViT patch token) as ``R = sum_d a_d c_d``: ``c`` is the *context vector*, the relevance each
unit receives per unit of activation. For LRP-0 on a ReLU network the context is exactly the gradient of the
explained score with respect to the activation (LRP-0 relevance is gradient x activation at every layer of a ReLU
net, biases included), and that is the context used here: ``c = d f_t / d a``, so ``a * c`` is gradient x
activation. (Issue 17's "context = gradient x activation" is the *relevance*; the context itself is the gradient.)
Other LRP rules (LRP-gamma, the authors' choice for VGG16) would give other contexts; they are not implemented.

Pairs are rows ``(a, c)`` of shape ``(D,)``: every position of every image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.attribution._spatial import feature_grid
from lit_xai.attribution.base import resolve_target, select_target
from lit_xai.attribution.gradients import gradient_mode, prepare_input
from lit_xai.layers import layer_output, resolve_layer
from lit_xai.links import get_link

__all__ = ["ActivationContext", "channels_last", "collect_pairs", "forward_with_context"]


def channels_last(t: Tensor) -> Tensor:
    """A layer's output with its channels last: ``(B, D, h, w) -> (B, h, w, D)``; ViT tokens ``(B, N, D)`` and
    vectors ``(B, D)`` already are."""
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def forward_with_context(
    model: nn.Module,
    module: nn.Module,
    layer: str,
    x: Tensor,
    target: Tensor | int | None,
    link: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward and one backward pass: ``(inputs, activations, contexts, target)``.

    ``inputs`` is ``x`` made differentiable; ``activations`` are the layer's output in :func:`channels_last` layout
    (every token of a ViT, prefix tokens included), still in the autograd graph so relevance can be sent further
    down; ``contexts`` (the gradient of the target score, same shape) are detached. Call it inside
    :func:`~lit_xai.attribution.gradients.gradient_mode`.
    """
    inputs = prepare_input(x)
    with layer_output(module) as captured:
        logits = model(inputs)
    if "output" not in captured:
        raise ValueError(f"layer {layer!r} was not called in the model's forward pass; choose another layer")
    features = captured["output"]
    feature_grid(model, features, x, layer)  # refuse layouts that have no grid before any work
    target = resolve_target(target, x.shape[0], logits)
    score = select_target(link(logits), target).sum()
    (grads,) = torch.autograd.grad(score, features, retain_graph=True)
    return inputs, channels_last(features), channels_last(grads), target


@dataclass
class ActivationContext:
    """Pairs collected at one layer.

    Attributes:
        activations: ``(N, D)`` activation vectors.
        contexts: ``(N, D)`` their context vectors (gradients of the explained score).
        layer: the layer's name.
        num_images: images the pairs come from.
    """

    activations: Tensor
    contexts: Tensor
    layer: str
    num_images: int

    def cross_covariance(self) -> Tensor:
        """``(E[a c^T] + E[c a^T]) / 2`` in float64, ``(D, D)``: PRCA's matrix."""
        a, c = self.activations.double(), self.contexts.double()
        cross = a.T @ c / a.shape[0]
        return (cross + cross.T) / 2


def _batch(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, dict):
        return batch["input"], batch.get("target")
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def collect_pairs(
    model: nn.Module,
    layer: str,
    data: Iterable,
    target: int | None = None,
    link: str | Callable[[Tensor], Tensor] = "logits",
    max_pairs: int = 200_000,
    device: torch.device | str | None = None,
) -> ActivationContext:
    """Collect ``(activation, context)`` pairs at ``layer`` over ``data`` in one pass.

    Args:
        model: the network (its mode is not changed; put it in eval mode).
        layer: the layer's name in ``model.named_modules()``.
        data: batches (dicts with ``"input"`` and ``"target"``, ``(x, y)`` tuples or tensors), or a
            LightningDataModule (its ``train_dataloader()``).
        target: ``None`` explains each image's label (the predicted class where there are no labels); a class
            index explains that class on the images labelled with it only, as the paper fits one class at a time.
        link: the explained score from the logits (``"logits"``, ``"softmax"``, ... or a callable).
        max_pairs: stop once this many pairs are collected (the last batch is cut).
        device: where to run; default the model's first parameter's device.

    Returns:
        An :class:`ActivationContext` (float32 tensors on the CPU).
    """
    module, link = resolve_layer(model, layer), get_link(link)
    if hasattr(data, "train_dataloader"):
        data = data.train_dataloader()
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else None
    activations, contexts, count, images = [], [], 0, 0
    for batch in data:
        x, labels = _batch(batch)
        if target is not None:
            if labels is None:
                raise ValueError(
                    "target=<class> keeps the images labelled with it, and the data has no labels"
                )
            x = x[torch.as_tensor(labels) == target]
            explained: Tensor | int | None = target
        else:
            explained = labels
        if len(x) == 0:
            continue
        x = x.to(device)
        explained = explained.to(x.device) if isinstance(explained, Tensor) else explained
        with gradient_mode():
            _, a, c, _ = forward_with_context(model, module, layer, x, explained, link)
        # Every position of the grid (every patch token of a ViT) is a sample: (B, D, h, w) -> (B h w, D)
        a = channels_last(feature_grid(model, a.detach(), x, layer, from_channels_last=True)).reshape(
            -1, a.shape[-1]
        )
        c = channels_last(feature_grid(model, c, x, layer, from_channels_last=True)).reshape(-1, c.shape[-1])
        keep = min(len(a), max_pairs - count)
        activations.append(a[:keep].float().cpu())
        contexts.append(c[:keep].float().cpu())
        per_image = len(a) // len(x)
        count, images = count + keep, images + -(-keep // per_image)  # a cut image counts once
        if count >= max_pairs:
            break
    if count < 2:
        raise ValueError(
            f"collected {count} (activation, context) pairs at {layer!r}; pass data that holds images"
            + ("" if target is None else f" labelled {target}")
        )
    return ActivationContext(torch.cat(activations), torch.cat(contexts), layer, images)
