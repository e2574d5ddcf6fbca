"""Loss terms more than one algorithm uses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["prediction_kl"]


def prediction_kl(logits: Tensor, other_logits: Tensor) -> Tensor:
    """Mean over the batch of ``KL(softmax(logits) ‖ softmax(other_logits))``.

    Computed on log-probabilities for numerical stability (``batchmean``: the true KL per sample); gradients flow
    through both distributions. Saliency-guided training's penalty (Ismail et al., NeurIPS 2021) and VisFIS's
    invariance term (Ying et al., NeurIPS 2022).
    """
    return F.kl_div(
        other_logits.log_softmax(-1), logits.log_softmax(-1), reduction="batchmean", log_target=True
    )
