"""The settings of ``evaluate.py`` and their checks: every option is a config key and a flag (jsonargparse).

The parser mirrors LightningCLI: top-level evaluation options, ``trainer`` (every :class:`lightning.Trainer`
argument, so ``--trainer.devices 8 --trainer.strategy ddp`` works) and ``data`` (a LightningDataModule chosen by
``class_path``, as in ``train.py``'s configs). :func:`check_settings` rejects unknown method or metric names,
options of unknown methods, and missing checkpoints with one clear message, before anything is loaded.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser

from lit_xai.attribution import ATTRIBUTIONS
from lit_xai.attribution.captum_adapter import split_captum_options
from lit_xai.ground_truth import resolve_estimator
from lit_xai.metrics.registry import METRICS as METRIC_REGISTRY
from lit_xai.models import ClassifierSpec

__all__ = ["EvaluationSettings", "METRICS", "build_parser", "check_settings", "explainer_paths"]

#: Metric names accepted in ``metrics``, and the class each one builds: the registry's metrics that score
#: explanations on their own (Shapley error is set by ``ground_truth``).


class _EvaluatedMetrics(Mapping):
    """``{name: class}`` of the metrics ``evaluate.py`` runs by name (Shapley error is its own step): a live view
    of the registry, so metrics registered later (``plugins``) are known too."""

    def __getitem__(self, name: str) -> type:
        spec = METRIC_REGISTRY[name]
        if spec.needs == "ground_truth":
            raise KeyError(name)
        return spec.cls

    def __iter__(self) -> Iterator[str]:
        return (name for name, spec in METRIC_REGISTRY.items() if spec.needs != "ground_truth")

    def __len__(self) -> int:
        return sum(1 for _ in self)


METRICS = _EvaluatedMetrics()


@dataclass
class EvaluationSettings:
    """What to explain, how, and how to score it.

    Args:
        surrogate_checkpoint: the surrogate (``SurrogateModule`` checkpoint) that scores every explanation: removal
            metrics go through it and its masker, and gradient baselines explain its network on full inputs.
            Defaults to the surrogate stored in the first explainer.
        model: instead of a surrogate, a classifier trained anywhere scores the explanations through its own
            removal (token dropping for ViTs, zero filling otherwise): a ``train.py`` checkpoint, a timm name with
            a weights file, or a ``package.module:function`` factory (:class:`lit_xai.models.ClassifierSpec`).
        explainers: learned explainers (``ExplainerModule`` checkpoints), as ``{name: path}`` or a list of paths.
        classifier_checkpoint: when set, gradient and attention baselines explain this classifier instead of the
            surrogate network (removal metrics still score through the surrogate).
        baselines: attribution baselines by name (see ``lit_xai.attribution.ATTRIBUTIONS``).
        baseline_kwargs: per-baseline options, e.g. ``{integrated_gradients: {steps: 32}}``.
        own_methods: explanation methods of your own, ``{name: "package.module:function"}``; each is called as
            ``function(model, x, target)`` with autograd on and returns per-player values ``(B, d)`` or a map in the
            input's layout (``(B, H, W)``, ``(B, C, H, W)`` or ``(B, F)``), which is summed onto the players.
        captum_methods: captum attribution classes (``pip install "lit_xai[captum]"``), ``{name: {class:
            IntegratedGradients, n_steps: 32}}``: every other key is an option of the class or of its ``attribute``
            (and ``link``, ``seed``). Perturbation methods remove players through the scoring masker, gradient
            methods explain the network like the gradient baselines (:mod:`lit_xai.attribution.captum_adapter`).
        metrics: ``insertion_deletion``, ``sensitivity_n``, ``eraser``, ``localization`` (runs when the data has
            an ``annotation``), ``completeness_soundness`` (every class is explained for it, untimed).
        metric_kwargs: per-metric options, e.g. ``{sensitivity_n: {subset_sizes: [2, 4, 8]}}``.
        target: explain the surrogate's ``predicted`` class or the ``true`` label.
        ground_truth: Shapley values of the surrogate's game to measure errors against: ``auto`` (exact when
            the players are at most 16, else converged KernelSHAP: :mod:`lit_xai.ground_truth`), ``exact``,
            ``kernel`` or ``none``.
        ground_truth_images: ground truth is computed for the first this many images only (it is expensive).
        kernel_budgets: evaluations per image at which KernelSHAP's error is plotted against the explainer's.
        num_images: evaluate only the first this many test images (``null``: all).
        model_batch_size: masked inputs per forward pass in metrics and ground truth.
        figure_images: images shown in the explanation grid.
        confidence: level of the confidence intervals.
        output_dir: where results.json, results.md and the figures are written (``null``: nowhere; the results
            are still returned).
        seed: seeds metrics, stochastic baselines and Lightning.
        plugins: modules imported before anything else (``my_package.my_metric``, importable: on ``PYTHONPATH``): their registry lines add maskers, baselines, metrics and learned
            explainers (README, "Extending lit_xai").
    """

    surrogate_checkpoint: str | None = None
    model: ClassifierSpec | None = None
    explainers: dict[str, str] | list[str] = field(default_factory=list)
    classifier_checkpoint: str | None = None
    baselines: list[str] = field(
        default_factory=lambda: ["gradient", "integrated_gradients", "leave_one_out", "random"]
    )
    own_methods: dict[str, str] = field(default_factory=dict)
    captum_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: ["insertion_deletion", "sensitivity_n", "eraser"])
    metric_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: Literal["predicted", "true"] = "predicted"
    ground_truth: Literal["auto", "exact", "kernel", "none"] = "auto"
    ground_truth_images: int = 32
    kernel_budgets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    num_images: int | None = None
    model_batch_size: int = 1024
    figure_images: int = 6
    confidence: float = 0.95
    output_dir: str | None = "outputs/eval"
    seed: int = 0
    plugins: list[str] = field(default_factory=list)


def import_plugins(modules: list[str]) -> None:
    """Import the user's modules so their registrations run; a missing one is a clear ``ValueError``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"plugins: cannot import {name!r} ({err}); check the name and PYTHONPATH"
            ) from err


# Trainer defaults for evaluation: no logger or checkpoints, and autograd allowed (gradient baselines need it).
TRAINER_DEFAULTS = {
    "trainer.logger": False,
    "trainer.enable_checkpointing": False,
    "trainer.enable_model_summary": False,
    "trainer.inference_mode": False,
    "trainer.devices": 1,
}


def build_parser() -> ArgumentParser:
    """The ``evaluate.py`` parser: ``--config``, the :class:`EvaluationSettings`, ``trainer.*`` and ``data``."""
    parser = ArgumentParser(
        prog="evaluate.py",
        description="Compare explanations of a model: learned explainers and baselines, scored by removal "
        "metrics through the surrogate, localisation and error against ground-truth Shapley values.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/eval/*.yaml)")
    parser.add_class_arguments(EvaluationSettings, None)
    parser.add_class_arguments(L.Trainer, "trainer", fail_untyped=False, instantiate=True)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.set_defaults(TRAINER_DEFAULTS)
    return parser


def explainer_paths(explainers: dict[str, str] | list[str]) -> dict[str, str]:
    """``{name: path}`` of the explainers; a list is named ``explainer`` (one) or ``explainer_1``, ``explainer_2``."""
    if isinstance(explainers, dict):
        return {str(name): str(path) for name, path in explainers.items()}
    if len(explainers) == 1:
        return {"explainer": str(explainers[0])}
    return {f"explainer_{i}": str(path) for i, path in enumerate(explainers, start=1)}


# Supplied by the evaluation itself, never by the user.
_SUPPLIED = {"self", "model", "players", "masker"}


def accepted_options(cls: type) -> list[str]:
    """The keyword options of a baseline or metric class, following ``**kwargs`` into its attribution bases."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _SUPPLIED | set(names)
        ]
        # Metrics pass **kwargs to torchmetrics' process-group settings, which the evaluation controls.
        if not klass.__module__.startswith("lit_xai.attribution") or not any(
            p.kind == p.VAR_KEYWORD for p in params
        ):
            break
    return names


def _check_options(kind: str, name: str, options: Any, cls: type) -> None:
    if not isinstance(options, dict):
        raise ValueError(f"{kind}_kwargs.{name} must be a mapping of options, got {options!r}")
    allowed = accepted_options(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{kind}_kwargs.{name}: unknown option(s) {', '.join(unknown)}; {name} accepts {', '.join(allowed)}"
        )


def check_settings(settings: EvaluationSettings) -> dict[str, str]:
    """Reject bad settings with one clear message, before any model or data is loaded.

    Returns:
        ``{name: path}`` of the explainers.

    Raises:
        ValueError: unknown names, options for methods that are not run, out-of-range numbers.
        FileNotFoundError: a checkpoint that does not exist.
    """
    import_plugins(settings.plugins)  # first: they may register the names checked below
    explainers = explainer_paths(settings.explainers)
    if settings.surrogate_checkpoint is None and settings.model is None and not explainers:
        raise ValueError(
            "nothing scores the explanations: set surrogate_checkpoint (a SurrogateModule checkpoint), model (a "
            "classifier: checkpoint, timm + weights, or factory) or at least one explainer, whose surrogate is then "
            "used"
        )
    if settings.model is not None:
        if settings.surrogate_checkpoint is not None:
            raise ValueError(
                "set surrogate_checkpoint or model, not both: one network scores the explanations"
            )
        settings.model.check()
    unknown = [name for name in settings.baselines if base_method(name) not in ATTRIBUTIONS]
    if unknown:
        raise ValueError(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(ATTRIBUTIONS)} (a name may carry a "
            f"label after '@' to run one method with several settings, e.g. kernel_shap@2048)"
        )
    unknown = [name for name in settings.metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    for name, path in settings.own_methods.items():
        if ":" not in str(path):
            raise ValueError(f"own_methods.{name} must read 'package.module:function', got {path!r}")
    for name, spec in settings.captum_methods.items():
        check_captum_method(name, spec)
    names = (
        list(explainers)
        + list(settings.baselines)
        + list(settings.own_methods)
        + list(settings.captum_methods)
    )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"method name(s) used twice: {', '.join(repeated)}; give every method its own name")
    for name in explainers:
        if not name or "." in name:
            raise ValueError(f"explainer name {name!r} must be non-empty and contain no '.'")
    if not names:
        raise ValueError("no methods to evaluate: list explainers and/or baselines")
    for kind, options, registry in (
        ("baseline", settings.baseline_kwargs, ATTRIBUTIONS),
        ("metric", settings.metric_kwargs, METRICS),
    ):
        # Options of a known method that is not run are kept for when it is: a config lists options for every
        # method it may run, and `--baselines '[gradient]'` must not need `--baseline_kwargs` restated.
        for name, kwargs in options.items():
            if base_method(name) not in registry:
                raise ValueError(
                    f"{kind}_kwargs has options for {name!r}, which is not a {kind} (choose from "
                    f"{', '.join(registry)})"
                )
            _check_options(kind, name, kwargs, registry[base_method(name)])
    for key in ("ground_truth_images", "model_batch_size"):
        if getattr(settings, key) < 1:
            raise ValueError(f"{key} must be at least 1, got {getattr(settings, key)}")
    if settings.num_images is not None and settings.num_images < 1:
        raise ValueError(
            f"num_images must be at least 1 (or null for the whole test split), got {settings.num_images}"
        )
    if settings.figure_images < 0:
        raise ValueError(f"figure_images must be 0 or more, got {settings.figure_images}")
    if not 0.0 < settings.confidence < 1.0 or math.isnan(settings.confidence):
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {settings.confidence}")
    budgets = settings.kernel_budgets
    if budgets and (min(budgets) < 4 or sorted(set(budgets)) != list(budgets)):
        raise ValueError(
            f"kernel_budgets must be increasing evaluation counts of at least 4 (the empty and full coalitions plus "
            f"one pair), got {budgets}"
        )
    paths = [settings.surrogate_checkpoint, settings.classifier_checkpoint, *explainers.values()]
    if settings.model is not None:
        paths += [settings.model.checkpoint, settings.model.weights]
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(
                f"checkpoint not found: {path} (check the path, or train that stage first: make demo)"
            )
    return explainers


def check_captum_method(name: str, spec: Any) -> None:
    """``captum_methods.<name>``: a mapping with ``class`` (a ``captum.attr`` class) and options it accepts."""
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(
            f"captum_methods.{name} must be a mapping with 'class' (e.g. {{class: IntegratedGradients, n_steps: 32}}), "
            f"got {spec!r}"
        )
    options = {key: value for key, value in spec.items() if key not in ("class", "link", "seed")}
    try:
        split_captum_options(spec["class"], options)
    except (ImportError, ValueError) as err:
        raise ValueError(f"captum_methods.{name}: {err}") from None


def base_method(name: str) -> str:
    """The registered method behind a baseline name: ``kernel_shap@2048`` runs ``kernel_shap`` (with the options
    given under its full name), so one method can appear with several settings."""
    return name.split("@", 1)[0]


def resolve_ground_truth(mode: str, num_players: int) -> str:
    """``none``, or the estimator :func:`lit_xai.ground_truth.resolve_estimator` picks (``auto``: exact for at most
    16 players, converged KernelSHAP beyond; ``exact`` needs at most 20 players)."""
    if mode == "none":
        return mode
    try:
        return resolve_estimator(mode, num_players)
    except ValueError as err:
        raise ValueError(f"ground_truth: {err} (or none)") from None
