"""What a module offers to the code that explains it, declared once instead of guessed from attribute names.

The explanation callbacks (and anything else that explains a LightningModule) need three things: which network's
predictions to explain, the players its inputs are made of, and how that network sees missing players. They used
to find them by probing ``pl_module.net.surrogate``, ``pl_module.model``, ``pl_module.masker``,
``pl_module.net.masker`` in turn. Every learned module of the toolkit now declares them through
:class:`ExplainedModel`, and a learned explainer adds :class:`Explainer`'s ``attribute``. A module of your own
takes part by defining the same members (they are structural protocols: no base class to inherit).

Example:
    >>> from lit_xai.algorithms.classifier import ClassifierModule
    >>> module = ClassifierModule("cnn", 3, {"in_chans": 1})
    >>> isinstance(module, ExplainedModel), module.explained_network is module.model, module.players
    (True, True, None)
    >>> isinstance(module, Explainer)  # a classifier is explained, it does not explain
    False
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from lit_xai.masking import Masker
from lit_xai.players import Players

__all__ = ["ExplainedModel", "Explainer", "LearnedExplainer"]


@runtime_checkable
class ExplainedModel(Protocol):
    """A module whose network can be explained.

    Attributes:
        explained_network: the network whose predictions are explained: the classifier, the surrogate, the
            predictor; for an amortized explainer, the surrogate whose game it estimates.
        players: the players of its inputs (patches, columns), or ``None`` when the module does not fix them
            (explainers then choose a patch grid or one player per column).
        masker: how ``explained_network`` is run with players missing (``masker(network, x, keep) -> logits``), or
            ``None`` for a network that takes plain inputs (zero filling is then used).
    """

    @property
    def explained_network(self) -> nn.Module: ...

    @property
    def players(self) -> Players | None: ...

    @property
    def masker(self) -> Masker | None: ...


@runtime_checkable
class Explainer(Protocol):
    """Anything that explains: ``attribute(x, target)`` returns ``(B, d)`` values for the classes ``target``
    (or ``(B, d, C)`` for every class when ``target`` is ``None``)."""

    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor: ...


@runtime_checkable
class LearnedExplainer(ExplainedModel, Explainer, Protocol):
    """A trained explainer module: it declares the network it explains and explains it itself."""
