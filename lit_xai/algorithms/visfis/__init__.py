"""Explanation supervision: VisFIS (Ying, Hase & Bansal, NeurIPS 2022) generalised from VQA objects to players, and
Right for the Right Reasons (Ross, Hughes & Doshi-Velez, IJCAI 2017), as weighted terms of one training loss."""

from lit_xai.algorithms.visfis.lightning_model import TERMS, VisFISModule
from lit_xai.algorithms.visfis.loss import (
    attribution_invariance_loss,
    output_invariance_loss,
    plausibility_loss,
    rrr_loss,
    sufficiency_loss,
    uncertainty_loss,
)
from lit_xai.algorithms.visfis.torch_model import (
    human_importance,
    invariance_keep,
    model_importance,
)

__all__ = [
    "TERMS",
    "VisFISModule",
    "attribution_invariance_loss",
    "human_importance",
    "invariance_keep",
    "model_importance",
    "output_invariance_loss",
    "plausibility_loss",
    "rrr_loss",
    "sufficiency_loss",
    "uncertainty_loss",
]
