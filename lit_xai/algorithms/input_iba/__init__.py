"""Information bottleneck attribution: IBA (Schulz et al., ICLR 2020) and InputIBA with a learned generative
prior (Zhang et al., NeurIPS 2021)."""

from lit_xai.algorithms.input_iba.bottleneck import PerImageBottleneck, bottleneck_kl
from lit_xai.algorithms.input_iba.explainer import IBA, BottleneckConfig, InputIBA, upsample_bits
from lit_xai.algorithms.input_iba.prior import GANConfig, GenerativePrior
from lit_xai.algorithms.input_iba.statistics import (
    LayerStatistics,
    WelfordEstimator,
    estimate_layer_statistics,
    resolve_layer,
)
from lit_xai.algorithms.input_iba.torch_model import BatchedCritic, MaskGenerator, feature_grid

__all__ = [
    "IBA",
    "InputIBA",
    "BottleneckConfig",
    "GANConfig",
    "GenerativePrior",
    "LayerStatistics",
    "WelfordEstimator",
    "estimate_layer_statistics",
    "resolve_layer",
    "PerImageBottleneck",
    "bottleneck_kl",
    "upsample_bits",
    "BatchedCritic",
    "MaskGenerator",
    "feature_grid",
]
