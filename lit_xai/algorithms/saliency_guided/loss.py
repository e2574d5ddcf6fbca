"""The saliency-guided training objective (Ismail, Corrada Bravo & Feizi, NeurIPS 2021).

``L = CE(f(x), y) + λ · KL(f(x) ‖ f(x̃))``, with ``x̃`` the input whose lowest-saliency features are masked.
The KL term is averaged over the batch (``batchmean``, the true KL per sample) and computed on log-probabilities
for numerical stability; gradients flow through both distributions, as in the paper.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_xai.algorithms.components.losses import prediction_kl

__all__ = ["saliency_guided_loss"]


def saliency_guided_loss(
    logits: Tensor,
    masked_logits: Tensor,
    target: Tensor,
    kl_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Saliency-guided training loss.

    Args:
        logits: ``(B, K)`` outputs on the original inputs.
        masked_logits: ``(B, K)`` outputs on the inputs with their lowest-saliency features masked.
        target: ``(B,)`` true classes.
        kl_weight: ``λ`` (the paper uses 1).
        label_smoothing: label smoothing of the cross-entropy (0 in the paper).

    Returns:
        ``(loss, cross_entropy, kl)``.
    """
    cross_entropy = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    kl = prediction_kl(logits, masked_logits)
    return cross_entropy + kl_weight * kl, cross_entropy, kl
