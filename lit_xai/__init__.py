"""lit_xai: train the learned parts of explainability methods and measure the explanations they give.

``import lit_xai`` is light (no torch): :func:`explain`, :func:`score` and :class:`Explanation` of
:mod:`lit_xai.api` are imported on first use.

Example:
    >>> import lit_xai
    >>> lit_xai.__version__ == __import__("importlib.metadata").metadata.version("lit_xai")
    True
    >>> lit_xai.explain is __import__("lit_xai.api").api.explain
    True
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["Explanation", "__version__", "explain", "score"]

try:
    __version__ = importlib.metadata.version("lit_xai")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {"explain", "score", "Explanation"}


def __getattr__(name: str):
    if name in _LAZY:
        from lit_xai import api

        return getattr(api, name)
    raise AttributeError(f"module 'lit_xai' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
