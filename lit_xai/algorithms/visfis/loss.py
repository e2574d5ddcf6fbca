"""Explanation-supervision losses: VisFIS's four objectives and Right for the Right Reasons.

VisFIS (Ying, Hase & Bansal, NeurIPS 2022), generalised from VQA objects to players:

- **sufficiency**: ``CE(f(x_important), y)``, the input with only the human-important players kept;
- **uncertainty**: ``KL(uniform ‖ f(x_unimportant))``, only the unimportant players kept: no evidence, no
  confident prediction;
- **invariance**, two variants: *output* alignment ``KL(f(x) ‖ f(x_S))`` with a random subset of the
  unimportant players removed from ``S``; *attribution* alignment, the share of the model's importance that falls
  on unimportant players, pushed to zero (VisFIS aligns its normalised importance of unimportant objects with zero);
- **plausibility**: ``1 - cos(model importance, human importance)``, the model importance differentiable.

RRR (Ross, Hughes & Doshi-Velez, *Right for the Right Reasons*, IJCAI 2017): ``‖A ⊙ ∂/∂x Σ_k log p_k‖²`` summed
over the input, with ``A = 1 - annotation`` the irrelevant region.

Every term is averaged over the rows it applies to (rows with at least one important player; uncertainty and
invariance also need an unimportant one), so it does not depend on batch order or on unannotated rows; a batch with
no such row gives zero.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.algorithms.components.losses import prediction_kl
from lit_xai.masking import Masker

__all__ = [
    "annotated_rows",
    "attribution_invariance_loss",
    "output_invariance_loss",
    "plausibility_loss",
    "rrr_loss",
    "sufficiency_loss",
    "uncertainty_loss",
]


def annotated_rows(important: Tensor, need_unimportant: bool = False) -> Tensor:
    """Rows ``(B,)`` a term applies to: some important player (and, if asked, some unimportant one)."""
    rows = important.any(dim=1)
    return rows & (~important).any(dim=1) if need_unimportant else rows


def _zero(ref: Tensor) -> Tensor:
    return ref.new_zeros(())


def sufficiency_loss(
    model: nn.Module, masker: Masker, x: Tensor, target: Tensor, important: Tensor
) -> Tensor:
    """Cross-entropy of the prediction from the important players alone.

    Args:
        model: the classifier.
        masker: how removed players are realised (its players match ``important``'s columns).
        x: inputs.
        target: ``(B,)`` true classes.
        important: ``(B, d)`` bool, the human-important players.
    """
    rows = annotated_rows(important)
    if not rows.any():
        return _zero(x)
    logits = masker(model, x[rows], important[rows])
    return F.cross_entropy(logits, target[rows])


def uncertainty_loss(model: nn.Module, masker: Masker, x: Tensor, important: Tensor) -> Tensor:
    """``KL(uniform ‖ p)`` of the prediction from the unimportant players alone (zero iff ``p`` is uniform)."""
    rows = annotated_rows(important, need_unimportant=True)
    if not rows.any():
        return _zero(x)
    log_p = masker(model, x[rows], ~important[rows]).log_softmax(-1)
    # KL(u ‖ p) = Σ_k u_k (log u_k - log p_k) = -log K - mean_k log p_k.
    return (-math.log(log_p.shape[1]) - log_p.mean(dim=1)).mean()


def output_invariance_loss(
    model: nn.Module, masker: Masker, x: Tensor, logits: Tensor, important: Tensor, keep: Tensor
) -> Tensor:
    """``KL(f(x) ‖ f(x_keep))``: removing unimportant players must not change the prediction.

    Args:
        model: the classifier.
        masker: how removed players are realised.
        x: inputs.
        logits: the model's outputs on the full inputs (gradients flow through both sides, as in VisFIS).
        important: ``(B, d)`` bool, the human-important players.
        keep: ``(B, d)`` bool, the players kept: all important ones and some unimportant ones
            (:func:`lit_xai.algorithms.visfis.torch_model.invariance_keep`).
    """
    if bool((important & ~keep).any()):
        raise ValueError("keep must contain every important player: invariance only removes unimportant ones")
    rows = annotated_rows(important, need_unimportant=True)
    if not rows.any():
        return _zero(logits)
    return prediction_kl(logits[rows], masker(model, x[rows], keep[rows]))


def attribution_invariance_loss(model_importance: Tensor, important: Tensor, eps: float = 1e-12) -> Tensor:
    """Share of the model's absolute importance that falls on unimportant players (zero iff none does).

    ``Σ_{i unimportant} |m_i| / Σ_i |m_i|`` per row, in ``[0, 1]``: the normalisation makes the term blind to the
    scale of the gradients, so it only moves importance, as VisFIS's normalised importance does.
    """
    rows = annotated_rows(important)
    if not rows.any():
        return _zero(model_importance)
    magnitude = model_importance[rows].abs()
    outside = (magnitude * (~important[rows]).to(magnitude)).sum(dim=1)
    return (outside / (magnitude.sum(dim=1) + eps)).mean()


def plausibility_loss(model_importance: Tensor, human_importance: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cos(model importance, human importance)`` averaged over rows with some human importance.

    Zero when the model's importance is a positive multiple of the human one.
    """
    if model_importance.shape != human_importance.shape:
        raise ValueError(
            f"model and human importance must have the same shape, got {tuple(model_importance.shape)} and "
            f"{tuple(human_importance.shape)}"
        )
    rows = human_importance.abs().sum(dim=1) > 0
    if not rows.any():
        return _zero(model_importance)
    cosine = F.cosine_similarity(model_importance[rows], human_importance[rows].to(model_importance), eps=eps)
    return (1.0 - cosine).mean()


def rrr_loss(input_gradient: Tensor, annotation: Tensor) -> Tensor:
    """Right for the Right Reasons: ``Σ (A ⊙ ∂/∂x Σ_k log p_k)²`` with ``A = 1 - annotation``, mean over rows.

    Args:
        input_gradient: ``∂/∂x Σ_k log p_k``, the input's shape (``create_graph=True`` to train on it).
        annotation: human relevance, ``(B, H, W)`` for images (broadcast over channels) or ``(B, F)``.
    """
    rows = annotation.flatten(1).sum(dim=1) > 0
    if not rows.any():
        return _zero(input_gradient)
    irrelevant = 1.0 - annotation[rows].to(input_gradient)
    if input_gradient.dim() == 4:
        irrelevant = irrelevant.unsqueeze(1)
    penalty = (irrelevant * input_gradient[rows]).square()
    return penalty.flatten(1).sum(dim=1).mean()
