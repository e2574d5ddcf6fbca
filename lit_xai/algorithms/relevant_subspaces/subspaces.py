"""PRCA and DRSA: relevant subspaces of a layer's activations (Chormai, Herrmann, Müller & Montavon, "Disentangled
Explanations of Neural Network Predictions by Finding Relevant Subspaces", IEEE TPAMI 2024).

Both find an orthonormal basis ``U`` of shape ``(D, K, d')``: ``K`` subspaces of ``d'`` dimensions each in the
``D``-dimensional activation space, fitted on ``(activation, context)`` pairs ``(a_n, c_n)``
(:mod:`~lit_xai.algorithms.relevant_subspaces.context`). Subspace ``k`` carries the relevance
``R_k = (U_k^T a) . (U_k^T c)``.

- PRCA (principal relevant component analysis) maximises ``E[(u^T a)(u^T c)] = u^T S u`` over unit vectors, with
  ``S = (E[a c^T] + E[c a^T]) / 2``: the solution is the top eigenvectors of ``S``, in closed form. The top
  ``K d'`` eigenvectors are cut into ``K`` consecutive blocks of ``d'`` (the authors' demo does the same).
- DRSA (disentangled relevant subspace analysis) maximises a soft-min over subspaces of a soft-max over data of the
  positive subspace relevances ``r_nk = max(0, R_k(a_n, c_n))``:
  ``J(U) = (mean_k s_k^{1/q})^q`` with ``s_k = (mean_n r_nk^2)^{1/2}`` and ``q = 2`` (the paper's default), by
  gradient ascent ``U <- U + lr * dJ/dU`` followed by symmetric re-orthonormalisation ``U (U^T U)^{-1/2}`` (eigh in
  float64, as the authors found float32 unstable), from ``trials`` random orthonormal starts, keeping the best.
  The soft-min makes every subspace carry relevance of its own, which is what disentangles the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_xai.algorithms.relevant_subspaces.context import ActivationContext

__all__ = ["DRSAResult", "drsa", "drsa_objective", "orthonormalise", "prca"]


def _check_sizes(dim: int, num_subspaces: int, subspace_size: int) -> None:
    if num_subspaces < 1 or subspace_size < 1 or num_subspaces * subspace_size > dim:
        raise ValueError(
            f"need K >= 1 subspaces of d' >= 1 dimensions with K * d' <= D = {dim} (the layer's channels); got "
            f"K = {num_subspaces}, d' = {subspace_size}"
        )


def prca(pairs: ActivationContext, num_subspaces: int, subspace_size: int = 1) -> Tensor:
    """PRCA basis ``(D, K, d')``: the top ``K d'`` eigenvectors of the symmetrised cross-covariance, in order of
    decreasing eigenvalue, cut into ``K`` blocks of ``d'``. Each eigenvector's sign is fixed so that its largest
    entry in absolute value is positive (eigenvectors are defined up to sign; relevance is not affected)."""
    matrix = pairs.cross_covariance()
    dim = matrix.shape[0]
    _check_sizes(dim, num_subspaces, subspace_size)
    _, vectors = torch.linalg.eigh(matrix)  # ascending eigenvalues
    top = vectors.flip(1)[:, : num_subspaces * subspace_size]
    signs = top.gather(0, top.abs().argmax(0, keepdim=True)).sign()
    return (top * signs).float().reshape(dim, num_subspaces, subspace_size)


def orthonormalise(u: Tensor) -> Tensor:
    """``U (U^T U)^{-1/2}``: the orthonormal matrix closest to ``U`` (``(D, m)``, full column rank)."""
    values, vectors = torch.linalg.eigh((u.T @ u).double())
    inverse_sqrt = (vectors / values.sqrt()) @ vectors.T
    return u @ inverse_sqrt.to(u.dtype)


def drsa_objective(
    u: Tensor, activations: Tensor, contexts: Tensor, num_subspaces: int, softmin_order: float = 2.0
) -> Tensor:
    """DRSA's objective ``J(U)`` for a basis ``(D, K d')`` (or ``(D, K, d')``) on pairs ``(N, D)``."""
    u = u.reshape(u.shape[0], -1)
    n = activations.shape[0]
    projected_a = (activations @ u).view(n, num_subspaces, -1)
    projected_c = (contexts @ u).view(n, num_subspaces, -1)
    relevance = (projected_a * projected_c).sum(-1).clamp_min(0)  # (N, K)
    soft_max = relevance.pow(2).mean(0).sqrt()  # (K,): high when some data put much relevance in the subspace
    # The tiny floor keeps the gradient of s^{1/q} finite for a subspace that no sample finds relevant.
    return soft_max.clamp_min(1e-12).pow(1 / softmin_order).mean().pow(softmin_order)


@dataclass
class DRSAResult:
    """What :func:`drsa` returns: the best basis ``(D, K, d')``, its objective, and each trial's objectives after every
    step (all on the contexts' own scale)."""

    basis: Tensor
    objective: float
    trials: list[list[float]] = field(default_factory=list)


def drsa(
    pairs: ActivationContext,
    num_subspaces: int,
    subspace_size: int = 1,
    steps: int = 500,
    trials: int = 3,
    lr: float = 1.0,
    softmin_order: float = 2.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> DRSAResult:
    """DRSA basis by projected gradient ascent from ``trials`` random orthonormal starts (the paper: 3).

    Args:
        pairs: the collected ``(activation, context)`` pairs.
        num_subspaces: ``K``.
        subspace_size: ``d'``; ``K d' = D`` makes the subspaces span the layer, so the sub-maps need no residual.
        steps: gradient steps per trial.
        trials: random starts; the basis with the highest final objective is kept.
        lr: step size of the ascent on contexts normalised to mean absolute relevance 1 (the authors' demo steps by
            the raw gradient, ``lr = 1``, on VGG16's unnormalised contexts).
        softmin_order: ``q`` of the soft-min over subspaces.
        seed: seed of the random starts.
        device: where to optimise (default: where the pairs are).
    """
    a, c = pairs.activations, pairs.contexts
    if device is not None:
        a, c = a.to(device), c.to(device)
    # J is homogeneous of degree 1 in the contexts, so rescaling them leaves the maximiser unchanged. Dividing by the
    # mean absolute relevance |a . c| makes J of order 1 for every model, so that a step size means the same
    # everywhere (the authors' raw step of 1 suits VGG16's scale, not, e.g., a small CNN's logits).
    scale = float((a * c).sum(1).abs().mean())
    if not scale > 0:
        raise ValueError(
            "every (activation, context) pair has zero relevance; there is no relevant subspace to find"
        )
    c = c / scale
    dim = a.shape[1]
    _check_sizes(dim, num_subspaces, subspace_size)
    if steps < 1 or trials < 1:
        raise ValueError(f"steps and trials must be positive, got steps={steps}, trials={trials}")
    generator = torch.Generator().manual_seed(int(seed))
    width = num_subspaces * subspace_size
    best: tuple[float, Tensor] | None = None
    history = []
    for _ in range(trials):
        # A random orthonormal start: orthonormalised Gaussian columns (Haar distributed).
        u = orthonormalise(torch.randn(dim, width, generator=generator, dtype=a.dtype).to(a.device))
        objectives = []
        for _ in range(steps):
            u = u.detach().requires_grad_(True)
            objective = drsa_objective(u, a, c, num_subspaces, softmin_order)
            (grad,) = torch.autograd.grad(objective, u)
            objectives.append(float(objective.detach()))
            u = orthonormalise(u.detach() + lr * grad)
        with torch.no_grad():
            final = float(drsa_objective(u, a, c, num_subspaces, softmin_order))
        history.append([value * scale for value in (*objectives, final)])  # on the contexts' own scale
        if best is None or final > best[0]:
            best = (final, u.detach())
    objective, u = best
    return DRSAResult(u.cpu().reshape(dim, num_subspaces, subspace_size), objective * scale, history)
