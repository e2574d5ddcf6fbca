"""Backbones: timm models (ViTs, CNNs) and small networks for tabular data and small images."""

from lit_xai.models.factory import (
    SMALL_MODELS,
    backbone_from_checkpoint,
    build_model,
    load_state_dict,
    read_checkpoint,
)
from lit_xai.models.small import MLP, SmallCNN

__all__ = [
    "MLP",
    "SmallCNN",
    "SMALL_MODELS",
    "backbone_from_checkpoint",
    "build_model",
    "load_state_dict",
    "read_checkpoint",
]
