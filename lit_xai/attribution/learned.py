"""A trained explainer behind the baseline interface, so one registry line puts it in ``evaluate.py``.

A learned explainer is a LightningModule trained by ``train.py`` (any class path) that explains by itself:
``attribute(x, target) -> (B, d)`` (:class:`lit_xai.protocols.Explainer`). Subclass :class:`LearnedAttribution`
with its ``name`` and ``module_class`` and register it (:func:`lit_xai.attribution.register_attribution`); then
``baselines: [<name>]`` with ``baseline_kwargs: {<name>: {checkpoint: <path>}}`` evaluates it like every other
method, its own forward passes counted in its cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import Attribution, resolve_target
from lit_xai.players import Players

__all__ = ["LearnedAttribution"]


class LearnedAttribution(Attribution):
    """Explain with a trained explainer module read from its checkpoint (weights only), frozen, in eval mode.

    Subclasses set ``name`` (the registry name) and ``module_class`` (the LightningModule to load).

    Args:
        model: the network being explained; with ``target=None`` its predicted class is explained.
        players: the players the explainer's values are for (checked against its output).
        checkpoint: the explainer's checkpoint (``train.py`` writes ``.../checkpoints/best.ckpt``).
    """

    module_class: ClassVar[type[nn.Module]]

    def __init__(self, model: nn.Module, players: Players, checkpoint: str) -> None:
        super().__init__(model, players)
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"{self.name}: checkpoint not found: {checkpoint} (train the explainer first)"
            )
        module = self.module_class.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
        self.module = module.eval().requires_grad_(False)

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        """The networks an explanation runs besides ``model`` (their forward passes count in its cost)."""
        return (self.module,)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            logits = self.model(x) if target is None else None
            target = resolve_target(target, x.shape[0], logits)
            values = self.module.attribute(x, target)
        expected = (x.shape[0], self.players.num_players)
        if tuple(values.shape) != expected:
            raise ValueError(
                f"{self.name}: the explainer returned shape {tuple(values.shape)} for target classes; expected "
                f"{expected} (one value per player)"
            )
        return values
