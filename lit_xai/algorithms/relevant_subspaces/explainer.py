"""Disentangled explanations: one sub-map per relevant subspace (Chormai et al., IEEE TPAMI 2024).

Given a basis ``U`` ``(D, K, d')`` at a layer (:func:`~lit_xai.algorithms.relevant_subspaces.subspaces.prca` or
:func:`~lit_xai.algorithms.relevant_subspaces.subspaces.drsa`), the relevance ``a . c`` of each activation vector
(``c`` the gradient of the target score: LRP-0's context on ReLU nets) splits into
``R_k = a . (P_k c)`` with ``P_k = U_k U_k^T``, plus a residual ``a . ((I - U U^T) c)`` in the orthogonal
complement (zero when ``K d' = D``). The ``K + 1`` parts add up to ``a . c`` exactly (linear algebra, no sampling).

Sub-maps in pixels send each part down to the input as LRP-0 would on a ReLU net: the input relevance of part ``k``
is ``x * d(a . sg(P_k c)) / dx`` with ``sg`` stopping the gradient (the context is held fixed, as LRP does). The
``K + 1`` pixel maps add up to ``x * d(a . sg(c)) / dx``, which is gradient x input, the plain explanation, whenever
every path from the input to the output passes through the layer (sequential CNNs, a ViT block's output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_xai.algorithms.relevant_subspaces.context import collect_pairs, forward_with_context
from lit_xai.algorithms.relevant_subspaces.subspaces import drsa, prca
from lit_xai.attribution._spatial import feature_grid, require_patch_grid
from lit_xai.attribution.base import Attribution, preserved_model_state
from lit_xai.attribution.gradients import gradient_mode
from lit_xai.io import atomic_save, safe_torch_load
from lit_xai.layers import resolve_layer
from lit_xai.links import get_link
from lit_xai.players import Players

__all__ = ["RelevantSubspaces"]


class RelevantSubspaces(Attribution):
    """Sub-maps of an explanation, one per relevant subspace of a layer, plus the residual.

    Build it from a basis, or fit one with :meth:`fit_prca` / :meth:`fit_drsa`.

    Args:
        model: the network (eval mode).
        players: a :class:`~lit_xai.players.PatchGrid` for images (sub-maps pooled per player).
        layer: the layer's name in ``model.named_modules()`` (``"features"``, ``"layer3"``, ``"blocks.5"``).
        basis: orthonormal ``(D, K, d')``.
        link: the explained score from the logits (``"logits"``: the paper explains logits).

    ``attribute(x, target)`` returns ``(B, K + 1, d)``: sub-map ``k`` pooled per player (sum over its pixels), the
    last row the residual; summed over ``K + 1`` it is :class:`~lit_xai.attribution.GradientXInput`'s attribution.
    ``attribute_pixels`` gives ``(B, K + 1, H, W)``, ``attribute_grid`` the relevances at the layer
    ``(B, K + 1, h, w)`` (summed: gradient x activation, channels summed; a ViT's prefix tokens are not on the grid).
    """

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        layer: str,
        basis: Tensor,
        link: str | Callable[[Tensor], Tensor] = "logits",
    ) -> None:
        super().__init__(model, players)
        self.players = require_patch_grid(players, "RelevantSubspaces")
        self.layer, self.module = layer, resolve_layer(model, layer)
        basis = torch.as_tensor(basis, dtype=torch.float32)
        if basis.dim() != 3:
            raise ValueError(f"basis must have shape (D, K, d'), got {tuple(basis.shape)}")
        flat = basis.reshape(basis.shape[0], -1)
        gram = flat.T @ flat
        if not torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4):
            raise ValueError("basis must be orthonormal (U^T U = I); fit it with prca or drsa")
        self.basis = basis
        self.link_name = link if isinstance(link, str) else None
        self.link = get_link(link)

    @property
    def num_subspaces(self) -> int:
        return self.basis.shape[1]

    def __repr__(self) -> str:
        d, k, s = self.basis.shape
        return f"RelevantSubspaces(layer={self.layer!r}, D={d}, K={k}, d'={s}, players={self.players!r})"

    @classmethod
    def fit_prca(
        cls,
        model: nn.Module,
        players: Players,
        layer: str,
        data: Iterable,
        num_subspaces: int,
        subspace_size: int = 1,
        target: int | None = None,
        max_pairs: int = 200_000,
        link: str | Callable[[Tensor], Tensor] = "logits",
    ) -> RelevantSubspaces:
        """Collect pairs over ``data`` in one pass (:func:`collect_pairs`; ``target`` as there) and fit PRCA."""
        pairs = collect_pairs(model, layer, data, target, link, max_pairs)
        return cls(model, players, layer, prca(pairs, num_subspaces, subspace_size), link)

    @classmethod
    def fit_drsa(
        cls,
        model: nn.Module,
        players: Players,
        layer: str,
        data: Iterable,
        num_subspaces: int,
        subspace_size: int = 1,
        target: int | None = None,
        max_pairs: int = 200_000,
        link: str | Callable[[Tensor], Tensor] = "logits",
        **drsa_kwargs,
    ) -> RelevantSubspaces:
        """Collect pairs over ``data`` and fit DRSA (``drsa_kwargs``: ``steps``, ``trials``, ``lr``, ``seed``...)."""
        pairs = collect_pairs(model, layer, data, target, link, max_pairs)
        result = drsa(pairs, num_subspaces, subspace_size, **drsa_kwargs)
        return cls(model, players, layer, result.basis, link)

    def save(self, path: str | Path) -> None:
        """Write the layer and basis atomically (readable with ``weights_only=True``)."""
        if self.link_name is None:
            raise ValueError("a custom link cannot be saved; rebuild the explainer with the basis instead")
        atomic_save({"layer": self.layer, "basis": self.basis, "link": self.link_name}, path)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module, players: Players) -> RelevantSubspaces:
        state = safe_torch_load(path)
        return cls(model, players, state["layer"], state["basis"], state["link"])

    def _parts(self, contexts: Tensor) -> Tensor:
        """Contexts with channels last ``(..., D)`` -> ``(..., K + 1, D)``: ``P_k c`` per subspace, then the residual
        ``c - sum_k P_k c``."""
        if contexts.shape[-1] != self.basis.shape[0]:
            raise ValueError(
                f"layer {self.layer!r} has {contexts.shape[-1]} channels but the basis has {self.basis.shape[0]}"
            )
        u = self.basis.to(contexts)
        parts = torch.einsum("...kj,dkj->...kd", torch.einsum("...d,dkj->...kj", contexts, u), u)
        return torch.cat([parts, (contexts - parts.sum(-2)).unsqueeze(-2)], dim=-2)

    def _grid(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            _, a, c, _ = forward_with_context(self.model, self.module, self.layer, x, target, self.link)
            relevance = (a.detach().unsqueeze(-2) * self._parts(c)).sum(-1)  # (..., K + 1)
            return feature_grid(self.model, relevance, x, self.layer, from_channels_last=True)

    def _pixels(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with gradient_mode():
            inputs, a, c, _ = forward_with_context(self.model, self.module, self.layer, x, target, self.link)
            parts = self._parts(c)
            maps = []
            for k in range(parts.shape[-2]):
                # LRP-0 below the layer: the context of part k is held fixed and sent down by the gradient. Every
                # token takes part (a ViT's prefix tokens too), so the parts add up to gradient x input.
                (grad,) = torch.autograd.grad(
                    (a * parts[..., k, :]).sum(), inputs, retain_graph=k < parts.shape[-2] - 1
                )
                maps.append((inputs * grad).detach().sum(1))
            return torch.stack(maps, dim=1)

    def attribute_grid(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Relevance of each subspace (and the residual) at each position of the layer, ``(B, K + 1, h, w)``."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._grid(x, target)

    def attribute_pixels(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Sub-maps in pixels, ``(B, K + 1, H, W)``; they add up to gradient x input (channels summed)."""
        self.check_input(x)
        with preserved_model_state(self.model):
            return self._pixels(x, target)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        pixels = self._pixels(x, target)
        return torch.stack([self.players.pool(pixels[:, k]) for k in range(pixels.shape[1])], dim=1)
