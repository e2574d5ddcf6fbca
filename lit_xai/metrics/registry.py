"""The one list of explanation metrics, with each metric's defaults, read by ``ExplanationQuality`` and ``evaluate.py``.

Both used to choose defaults of their own and drifted apart: at 64 players sensitivity-n removed subsets of 8, 16
and 32 players in the callback and 6, 16 and 32 in ``evaluate.py``, so ``val/sensitivity_n`` and the report
disagreed for the same model. Every default that depends on the number of players is defined here, once.

The one deliberate difference is documented here too: a metric watched after every training epoch draws its
insertion/deletion curves at :data:`MONITOR_CURVE_STEPS` points instead of at every player count, because it runs
each epoch; ``evaluate.py`` draws the full curves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lit_xai.masking import Masker
from lit_xai.metrics.base import ExplanationMetric
from lit_xai.metrics.completeness_soundness import CompletenessSoundness
from lit_xai.metrics.eraser import Eraser
from lit_xai.metrics.insertion_deletion import InsertionDeletion
from lit_xai.metrics.localization import Localization
from lit_xai.metrics.sensitivity_n import SensitivityN
from lit_xai.metrics.shapley_error import ShapleyError
from lit_xai.players import Players
from lit_xai.registry import register

__all__ = [
    "METRICS",
    "MONITOR_CURVE_STEPS",
    "MetricSpec",
    "build_metric",
    "default_options",
    "register_metric",
    "sensitivity_n_sizes",
]

#: Points on the insertion/deletion curves of a metric watched every epoch (16 masked passes per input, not 2d).
MONITOR_CURVE_STEPS = 8


def sensitivity_n_sizes(num_players: int) -> list[int]:
    """Subset sizes of sensitivity-n: an eighth, a quarter and half of the players (2, 4, 8 of 16; 8, 16, 32 of 64)."""
    if num_players < 2:
        raise ValueError("sensitivity_n needs at least two players")
    return sorted({max(1, min(num_players - 1, num_players * k // 8)) for k in (1, 2, 4)})


@dataclass(frozen=True)
class MetricSpec:
    """How to build one metric.

    Attributes:
        cls: the torchmetrics class.
        needs: what its constructor takes besides options: the ``masker`` (removal metrics), the ``players``
            (localisation against annotations), or nothing (``ground_truth``: compared with Shapley values that the
            caller computes).
        defaults: default options for ``d`` players.
        monitor_defaults: defaults that replace those for a metric watched every epoch.
        maps: what ``update`` takes: the map of the explained class ``(B, d)`` (``"target"``), or a map for every
            class ``(B, d, C)`` (``"every_label"``: soundness scores the maps of the classes not predicted).
    """

    cls: type[ExplanationMetric]
    needs: Literal["masker", "players", "ground_truth"]
    defaults: Callable[[int], dict[str, Any]] = field(default=lambda d: {})
    monitor_defaults: Callable[[int], dict[str, Any]] = field(default=lambda d: {})
    maps: Literal["target", "every_label"] = "target"


METRICS: dict[str, MetricSpec] = {
    "insertion_deletion": MetricSpec(
        InsertionDeletion, "masker", monitor_defaults=lambda d: {"num_steps": min(d, MONITOR_CURVE_STEPS)}
    ),
    "sensitivity_n": MetricSpec(
        SensitivityN, "masker", defaults=lambda d: {"subset_sizes": sensitivity_n_sizes(d)}
    ),
    "eraser": MetricSpec(Eraser, "masker"),
    "localization": MetricSpec(Localization, "players"),
    "shapley_error": MetricSpec(ShapleyError, "ground_truth"),
    "completeness_soundness": MetricSpec(
        CompletenessSoundness,
        "masker",
        monitor_defaults=lambda d: {"num_steps": min(d, MONITOR_CURVE_STEPS)},
        maps="every_label",
    ),
}


def register_metric(
    name: str,
    needs: Literal["masker", "players", "ground_truth"] = "masker",
    defaults: Callable[[int], dict[str, Any]] | None = None,
    monitor_defaults: Callable[[int], dict[str, Any]] | None = None,
    maps: Literal["target", "every_label"] = "target",
):
    """Class decorator: make an :class:`~lit_xai.metrics.base.ExplanationMetric` known by ``name`` to
    ``evaluate.py`` (``metrics``, ``metric_kwargs``), ``ExplanationQuality`` and :func:`build_metric`.

    The arguments are :class:`MetricSpec`'s. A ``"masker"`` metric is built as ``cls(masker, **options)`` and
    updated as ``update(model, x, attributions, target)``.
    """

    def decorator(cls: type[ExplanationMetric]) -> type[ExplanationMetric]:
        if not (isinstance(cls, type) and issubclass(cls, ExplanationMetric)):
            raise ValueError(f"register_metric needs an ExplanationMetric subclass, got {cls!r}")
        given = {"defaults": defaults, "monitor_defaults": monitor_defaults}
        spec = MetricSpec(cls, needs, maps=maps, **{k: v for k, v in given.items() if v is not None})
        if name in METRICS and METRICS[name].cls is cls:
            return cls  # the same class again (a module imported twice)
        register(METRICS, "metric", name, spec)
        return cls

    return decorator


def default_options(name: str, num_players: int, monitoring: bool = False) -> dict[str, Any]:
    """The default options of metric ``name`` for ``num_players`` players (``monitoring``: watched every epoch).

    Example:
        >>> default_options("sensitivity_n", 64)
        {'subset_sizes': [8, 16, 32]}
        >>> default_options("insertion_deletion", 64, monitoring=True)
        {'num_steps': 8}
    """
    spec = _spec(name)
    options = spec.defaults(num_players)
    return {**options, **spec.monitor_defaults(num_players)} if monitoring else options


def build_metric(
    name: str,
    *,
    masker: Masker | None = None,
    players: Players | None = None,
    options: Mapping[str, Any] | None = None,
    monitoring: bool = False,
) -> ExplanationMetric:
    """Metric ``name`` with the registry's defaults under the given ``options``.

    Args:
        name: a key of :data:`METRICS`.
        masker: the removal that scores explanations (removal metrics; also gives the number of players).
        players: the players (localisation; the number of players when there is no masker).
        options: the user's options; they win over the defaults.
        monitoring: the metric is watched every epoch during training (cheaper curves).

    Raises:
        ValueError: an unknown name, a missing masker, or options the metric rejects (named ``metric_kwargs.<name>``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lit_xai.masking import BaselineFill
        >>> from lit_xai.players import FeatureGroups
        >>> metric = build_metric("insertion_deletion", masker=BaselineFill(FeatureGroups(4)))
        >>> model = nn.Linear(4, 2).eval()
        >>> metric.update(model, torch.randn(8, 4), torch.randn(8, 4), target=0)
        >>> sorted(metric.compute()), metric.summary()["insertion_auc"]["count"]
        (['deletion_auc', 'insertion_auc'], 8.0)
        >>> build_metric("sensitivity_n", masker=BaselineFill(FeatureGroups(64))).subset_sizes
        [8, 16, 32]
    """
    spec = _spec(name)
    counted = masker if masker is not None else players
    if spec.needs == "masker" and masker is None:
        raise ValueError(f"metric {name!r} scores explanations by removing players: it needs a masker")
    kwargs = default_options(name, counted.num_players, monitoring) if counted is not None else {}
    kwargs.update(options or {})
    try:
        if spec.needs == "masker":
            return spec.cls(masker, **kwargs)
        if spec.needs == "players":
            return spec.cls(players=players, **kwargs)
        return spec.cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metric_kwargs.{name}: {err}") from err


def _spec(name: str) -> MetricSpec:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]
