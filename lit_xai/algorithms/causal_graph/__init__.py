"""Causal explanatory graphs (Ahmad et al., "Causal Analysis for Robust Interpretability of Neural Networks",
arXiv 2305.08950): filters with a significant causal effect on a class, linked across layers by path interventions,
and per-image explanations through them."""

from lit_xai.algorithms.causal_graph.explainer import CausalFilterExplainer, plot_causal_graph
from lit_xai.algorithms.causal_graph.graph import (
    CausalGraph,
    benjamini_hochberg,
    build_causal_graph,
    intervened_scores,
    one_sided_t_test,
)

__all__ = [
    "CausalFilterExplainer",
    "CausalGraph",
    "benjamini_hochberg",
    "build_causal_graph",
    "intervened_scores",
    "one_sided_t_test",
    "plot_causal_graph",
]
