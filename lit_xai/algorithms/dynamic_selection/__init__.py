"""Amortized dynamic feature selection (Covert, Qiu, Lu, Kim, White & Lee, ICML 2023).

A policy network picks features one at a time and a predictor predicts from any subset; see
:mod:`~lit_xai.algorithms.dynamic_selection.torch_model` for the networks and the relaxed objective,
:mod:`~lit_xai.algorithms.dynamic_selection.lightning_model` for the two training stages and
:mod:`~lit_xai.algorithms.dynamic_selection.baselines` for static and random orders with the same predictor.

DIME (Gadgil, Covert & Lee, ICLR 2024) replaces the policy by a value network that estimates each feature's
conditional mutual information with the label: :mod:`~lit_xai.algorithms.dynamic_selection.cmi_model` and
:mod:`~lit_xai.algorithms.dynamic_selection.cmi_lightning`.
"""

from lit_xai.algorithms.dynamic_selection.cmi_lightning import CMISelectionModule
from lit_xai.algorithms.dynamic_selection.cmi_model import (
    CMISelector,
    entropy,
    shared_trunk,
    tie_hidden_layers,
)
from lit_xai.algorithms.dynamic_selection.lightning_model import (
    DynamicSelectionModule,
    MaskedPredictorModule,
    load_predictor_state,
)
from lit_xai.algorithms.dynamic_selection.torch_model import (
    DynamicSelector,
    Selection,
    build_network,
    build_players,
    concrete_sample,
)

__all__ = [
    "CMISelectionModule",
    "CMISelector",
    "DynamicSelectionModule",
    "DynamicSelector",
    "MaskedPredictorModule",
    "Selection",
    "build_network",
    "build_players",
    "concrete_sample",
    "entropy",
    "load_predictor_state",
    "shared_trunk",
    "tie_hidden_layers",
]
