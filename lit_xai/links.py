"""Link functions: what scale a game's value is measured on (probabilities by default, as in ViT Shapley)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LINKS", "get_link"]

LINKS: dict[str, Callable[[Tensor], Tensor]] = {
    "softmax": lambda logits: logits.softmax(dim=-1),
    "log_softmax": lambda logits: logits.log_softmax(dim=-1),
    "logits": lambda logits: logits,
    "sigmoid": torch.sigmoid,
}


def get_link(link: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Return the link function named ``link`` (``softmax``, ``log_softmax``, ``logits``, ``sigmoid``) or ``link`` itself."""
    if callable(link):
        return link
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r}; choose one of {', '.join(LINKS)} or pass a callable")
    return LINKS[link]
