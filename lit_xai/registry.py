"""The one rule every name registry of lit_xai follows (maskers, baselines, metrics): a name means one thing.

Registering the same object under its name again is a no-op (a module imported twice); another object under a taken
name is refused, since it would silently change what every config that uses the name means.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TypeVar

__all__ = ["register"]

T = TypeVar("T")


def register(registry: MutableMapping[str, T], kind: str, name: str, value: T) -> T:
    """Add ``value`` to ``registry`` under ``name`` and return it.

    Raises:
        ValueError: ``name`` is not a non-empty string, or names another ``kind`` already.
    """
    if not isinstance(name, str) or not name or "@" in name:
        raise ValueError(f"a {kind} name must be a non-empty string without '@', got {name!r}")
    if name in registry and registry[name] != value:
        raise ValueError(f"{kind} {name!r} is already registered ({registry[name]!r}); choose another name")
    registry[name] = value
    return value
