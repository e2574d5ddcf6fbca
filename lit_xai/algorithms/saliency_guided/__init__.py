"""Saliency-guided training (Ismail, Corrada Bravo & Feizi, NeurIPS 2021): mask the lowest-saliency features and
keep the prediction unchanged, so the gradient saliency of the trained model becomes more faithful."""

from lit_xai.algorithms.saliency_guided.lightning_model import SaliencyGuidedModule
from lit_xai.algorithms.saliency_guided.loss import prediction_kl, saliency_guided_loss
from lit_xai.algorithms.saliency_guided.torch_model import (
    RandomRangeFill,
    build_saliency_masker,
    input_gradient,
    lowest_saliency_keep,
    output_gradient,
    player_saliency,
    players_for_input,
)

__all__ = [
    "SaliencyGuidedModule",
    "RandomRangeFill",
    "build_saliency_masker",
    "input_gradient",
    "lowest_saliency_keep",
    "output_gradient",
    "player_saliency",
    "players_for_input",
    "prediction_kl",
    "saliency_guided_loss",
]
