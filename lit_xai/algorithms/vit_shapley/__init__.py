"""ViT Shapley (Covert, Kim & Lee, ICLR 2023) and FastSHAP (Jethani et al., ICLR 2022): a surrogate that tolerates
missing players, and an amortized explainer that outputs Shapley values for all players and classes at once."""

from lit_xai.algorithms.vit_shapley.lightning_model import ExplainerModule, SurrogateModule
from lit_xai.algorithms.vit_shapley.torch_model import (
    AmortizedShapley,
    ConvExplainerNet,
    MLPExplainerNet,
    ViTExplainerNet,
    efficient_normalization,
)

__all__ = [
    "SurrogateModule",
    "ExplainerModule",
    "AmortizedShapley",
    "ViTExplainerNet",
    "ConvExplainerNet",
    "MLPExplainerNet",
    "efficient_normalization",
]
