"""Plain supervised training of any backbone: the model the other algorithms explain."""

from lit_xai.algorithms.classifier.lightning_model import ClassifierModule

__all__ = ["ClassifierModule"]
