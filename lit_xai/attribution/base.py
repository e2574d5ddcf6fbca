"""The common interface of the non-learned attribution baselines.

Every explainer is called as captum's ``attribute(x, target)`` and returns one value per *player*
(:mod:`lit_xai.players`): ``(B, d)`` for the requested class, so that methods as different as gradients,
attention rollout and KernelSHAP can be compared by the same metrics (Covert, Lundberg & Lee, "Explaining by
Removing", JMLR 2021). Methods that work on pixels also give the pixel map (:meth:`PixelAttribution.attribute_pixels`),
kept for figures.

Two promises hold for every method: the model's train/eval mode and ``requires_grad`` flags are never changed, and
nothing is accumulated into parameters' ``.grad`` (gradients are taken with :func:`torch.autograd.grad` with
respect to the input only). The model is run in whatever mode it is in: call ``model.eval()`` yourself for
deterministic attributions (dropout) that do not depend on the batch (batch norm). Batch-norm running statistics
that a forward pass in training mode would update are restored afterwards.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from lit_xai.players import Players

__all__ = [
    "Attribution",
    "PixelAttribution",
    "preserved_model_state",
    "resolve_target",
    "select_target",
    "reduce_channels",
    "make_generator",
]


@contextlib.contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Restore the model's mode flags, ``requires_grad`` flags and batch-norm statistics on exit.

    Our methods never change the flags themselves; restoring them guards against model code that does. Batch-norm
    layers in training mode update their running statistics on every forward pass, which an explanation must not do.
    """
    modes = [(module, module.training) for module in model.modules()]
    grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    norm_stats = []
    for module in model.modules():
        if (
            isinstance(module, nn.modules.batchnorm._NormBase)
            and module.training
            and module.track_running_stats
        ):
            saved = {
                name: buf.detach().clone()
                for name, buf in module.named_buffers(recurse=False)
                if buf is not None
            }
            norm_stats.append((module, saved))
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in grad_flags:
            if param.requires_grad != flag:
                param.requires_grad_(flag)
        with torch.no_grad():
            for module, saved in norm_stats:
                for name, value in saved.items():
                    getattr(module, name).copy_(value)


def resolve_target(target: Tensor | int | None, batch_size: int, logits: Tensor | None = None) -> Tensor:
    """Return the class to explain for each input, a long tensor of shape ``(B,)``.

    Args:
        target: a class index for the whole batch, a tensor of ``B`` indices (or a scalar tensor), or ``None`` for
            the class the model predicts (``logits.argmax(-1)``).
        batch_size: ``B``.
        logits: the model's outputs ``(B, C)``; needed when ``target is None`` and used to check the range.
    """
    if target is None:
        if logits is None:
            raise ValueError("target=None needs the model's outputs to pick the predicted class")
        return logits.detach().argmax(dim=-1)
    device = logits.device if logits is not None else None
    if isinstance(target, bool) or not isinstance(target, (numbers.Integral, Tensor)):
        raise ValueError(
            f"target must be an int, a tensor of class indices or None, got {type(target).__name__}"
        )
    target = torch.as_tensor(target if isinstance(target, Tensor) else int(target), device=device)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.dim() == 0:
        target = target.expand(batch_size)
    if target.dim() != 1 or target.shape[0] != batch_size:
        raise ValueError(
            f"target must be an int or have shape ({batch_size},) (one class per input), got {tuple(target.shape)}"
        )
    target = target.long()
    if logits is not None and target.numel() and (target.min() < 0 or target.max() >= logits.shape[-1]):
        raise ValueError(f"target has class indices outside 0..{logits.shape[-1] - 1}: {target.tolist()}")
    return target


def select_target(values: Tensor, target: Tensor) -> Tensor:
    """Pick each row's class from values whose last dimension is the class: ``(B, ..., C) -> (B, ...)``."""
    index = target.view(-1, *([1] * (values.dim() - 1))).expand(*values.shape[:-1], 1)
    return values.gather(-1, index).squeeze(-1)


def reduce_channels(values: Tensor, players: Players) -> Tensor:
    """Per-input-element values -> the players' input layout: image channels are summed, tabular kept as is."""
    if values.dim() == 4:
        return values.sum(dim=1)
    if values.dim() == 2:
        return values
    raise ValueError(
        f"expected images (B, C, H, W) or tabular inputs (B, F), got values of shape {tuple(values.shape)}"
    )


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator seeded with ``seed`` on ``device`` (``None``: use the global random state)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


class Attribution:
    """Base class of the attribution baselines.

    Subclasses implement :meth:`_attribute`; the public :meth:`attribute` validates the input and protects the
    model's state. Calling the object is the same as calling :meth:`attribute`.

    Args:
        model: the network to explain; ``model(x)`` returns logits ``(B, C)``.
        players: the players of the input (:class:`~lit_xai.players.PatchGrid` or
            :class:`~lit_xai.players.FeatureGroups`).
    """

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, players: Players) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not hasattr(players, "num_players") or not hasattr(players, "pool"):
            raise ValueError(
                f"players must be a PatchGrid or FeatureGroups (see lit_xai.players), got {type(players).__name__}"
            )
        self.model = model
        self.players = players

    def __repr__(self) -> str:
        return f"{type(self).__name__}(players={self.players!r})"

    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        return self.attribute(x, target)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error if ``x`` does not match the players or holds NaNs."""
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        check = getattr(self.players, "check_input", None)
        if check is not None:
            check(x)
        if x.is_floating_point() and bool(torch.isnan(x.detach()).any()):
            raise ValueError("the input contains NaN values; clean or impute the data before explaining it")

    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Per-player attributions for ``target``.

        Args:
            x: a batch of inputs, ``(B, C, H, W)`` images or ``(B, F)`` tabular rows.
            target: the class to explain, per input (``(B,)``) or for all (an int); ``None`` explains the class
                the model predicts.

        Returns:
            ``(B, d)`` values, one per player.
        """
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._attribute(x, target)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        raise NotImplementedError


class PixelAttribution(Attribution):
    """An attribution computed per input element (pixel or column) and pooled to players by summing.

    Subclasses implement :meth:`_attribute_inputs`, which returns values of the input's own shape (per channel).
    Summing over a player's pixels keeps additive methods additive: the player values of integrated gradients
    still add up to ``f(x) - f(baseline)``.
    """

    def _attribute_inputs(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        raise NotImplementedError

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Pixel-level attributions: ``(B, H, W)`` for images (channels summed), ``(B, F)`` for tabular inputs."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return reduce_channels(self._attribute_inputs(x, target), self.players)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        pixels = reduce_channels(self._attribute_inputs(x, target), self.players)
        return self.players.pool(pixels, reduce="sum")
