"""Random attributions: the floor every explanation should beat in faithfulness metrics (e.g. ViT Shapley's
insertion/deletion tables list a random baseline next to the real methods; Covert, Kim & Lee, ICLR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import Attribution
from lit_xai.players import Players

__all__ = ["RandomAttribution"]


class RandomAttribution(Attribution):
    """Independent uniform values in ``[0, 1)`` per input and player; the model is never called.

    Args:
        model: unused (kept for the common interface).
        players: the players of the input.
        seed: seed of the explainer's own generator, created once: two explainers built with the same seed return
            the same values call for call, while successive calls (batches) differ. ``None`` uses the global
            random state.

    Values are drawn on the CPU, so a seed gives the same values on every device; ``target`` is ignored.
    """

    name = "random"

    def __init__(self, model: nn.Module, players: Players, seed: int | None = 0) -> None:
        super().__init__(model, players)
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        values = torch.rand(x.shape[0], self.players.num_players, generator=self.generator)
        return values.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
