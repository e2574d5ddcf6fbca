"""Plain supervised training of any backbone: the model the other algorithms explain.

The module is defined in the shared room (:mod:`lit_xai.algorithms.components.classifier`) because the algorithms
that train a classifier with an extra loss term (saliency-guided training, VisFIS) derive from it.
"""

from lit_xai.algorithms.components.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
