"""Saliency-guided training (Ismail, Corrada Bravo & Feizi, NeurIPS 2021): mask the lowest-saliency features and
keep the prediction unchanged, so the gradient saliency of the trained model becomes more faithful."""

from lit_xai.algorithms.saliency_guided.lightning_model import SaliencyGuidedModule
from lit_xai.algorithms.saliency_guided.loss import saliency_guided_loss
from lit_xai.algorithms.saliency_guided.torch_model import lowest_saliency_keep

__all__ = ["SaliencyGuidedModule", "lowest_saliency_keep", "saliency_guided_loss"]
