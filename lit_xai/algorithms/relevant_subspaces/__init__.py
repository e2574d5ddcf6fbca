"""Relevant subspaces of a hidden layer: PRCA and DRSA (Chormai, Herrmann, Müller & Montavon, IEEE TPAMI 2024)."""

from lit_xai.algorithms.relevant_subspaces.context import ActivationContext, collect_pairs
from lit_xai.algorithms.relevant_subspaces.explainer import RelevantSubspaces
from lit_xai.algorithms.relevant_subspaces.subspaces import (
    DRSAResult,
    drsa,
    prca,
)

__all__ = [
    "ActivationContext",
    "DRSAResult",
    "RelevantSubspaces",
    "collect_pairs",
    "drsa",
    "prca",
]
