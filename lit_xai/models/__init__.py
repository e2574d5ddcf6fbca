"""Backbones: timm models (ViTs, CNNs) and small networks for tabular data and small images; classifiers trained
elsewhere (:mod:`lit_xai.models.external`)."""

from lit_xai.models.external import ClassifierSpec, load_classifier_spec
from lit_xai.models.factory import (
    SMALL_MODELS,
    backbone_from_checkpoint,
    backbone_from_weights,
    build_model,
    load_state_dict,
    read_checkpoint,
)
from lit_xai.models.small import MLP, SmallCNN

__all__ = [
    "ClassifierSpec",
    "MLP",
    "SmallCNN",
    "SMALL_MODELS",
    "backbone_from_checkpoint",
    "backbone_from_weights",
    "build_model",
    "load_classifier_spec",
    "load_state_dict",
    "read_checkpoint",
]
