"""Explanation quality as validation metrics, so checkpoints can be picked by how good the explanations are.

After each validation epoch the callback explains a fixed validation subset and scores the explanations with the
metrics of :mod:`lit_xai.metrics`:

- ``"insertion_deletion"``: insertion and deletion AUC (Petsiuk et al., RISE, BMVC 2018) -> ``val/insertion_auc``,
  ``val/deletion_auc``;
- ``"shapley_error"``: agreement with ground-truth Shapley values of the model's game (:mod:`lit_xai.ground_truth`:
  exact enumeration up to 16 players, KernelSHAP beyond; the check of ViT Shapley, Covert, Kim & Lee, ICLR 2023) -> ``val/shapley_squared_error``,
  ``val/shapley_pearson``, ...; the ground truth is computed once and cached while the game is frozen (an explainer
  training against a fixed surrogate), and optionally stored in a file;
- ``"localization"``: pointing game, relevance mass accuracy and effective heat ratio against the data's
  ``annotation`` -> ``val/pointing_game``, ``val/relevance_mass``, ``val/ehr_auc``;
- ``"eraser"``: sufficiency and comprehensiveness (DeYoung et al., ACL 2020);
- ``"sensitivity_n"`` (Ancona et al., ICLR 2018).

Under DDP each process scores its share of the subset and the torchmetrics states are summed across processes, so
the logged value equals the single-process value; it is logged with ``pl_module.log`` at epoch end, so
``ModelCheckpoint(monitor="val/deletion_auc", mode="min")`` works.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import Metric

from lit_xai.callbacks._common import (
    ExplanationCallback,
    check_every_n_epochs,
    check_method,
    check_method_kwargs,
    check_num_samples,
    check_target_mode,
    due,
)
from lit_xai.callbacks._explain import ExplainSetup, explain, explain_every_label, explaining, predict
from lit_xai.ground_truth import resolve_estimator, shapley_ground_truth
from lit_xai.io import atomic_save, safe_torch_load
from lit_xai.metrics.registry import METRICS as METRIC_REGISTRY
from lit_xai.metrics.registry import build_metric
from lit_xai.shapley import ModelGame

__all__ = ["ExplanationQuality", "METRICS"]

METRICS = METRIC_REGISTRY  # the registry itself: metrics registered later are known too
#: Options of ``shapley_error`` that configure the ground truth rather than the score.
_GROUND_TRUTH_OPTIONS = ("estimator", "link", "model_batch_size", "max_evaluations", "threshold")


class ExplanationQuality(ExplanationCallback):
    """Score explanations of a fixed validation subset and log the scores as validation metrics.

    Args:
        metrics: any of ``"insertion_deletion"``, ``"shapley_error"``, ``"localization"``, ``"eraser"``,
            ``"sensitivity_n"``.
        method: the explainer scored: ``"self"`` (the module's learned explainer), a baseline name from
            :data:`lit_xai.attribution.ATTRIBUTIONS`, or ``"auto"`` (the module's own if it has one, else
            ``"gradient"``).
        num_samples: validation inputs scored (drawn once with ``seed``; the same every epoch and on every process).
        batch_size: inputs explained per pass.
        every_n_epochs: score after every n-th validation epoch (give ``ModelCheckpoint`` the same
            ``every_n_epochs`` when it monitors these metrics).
        seed: seed of the draw of the inputs.
        target: the class explained: ``"auto"`` (the label where the data has labels, else the prediction),
            ``"true"`` or ``"predicted"``.
        prefix: prepended to every metric name (``"val/"`` gives ``val/deletion_auc``).
        metric_kwargs: options per metric, e.g. ``{"insertion_deletion": {"num_steps": None}}`` for every player count
            (the default is 8 evenly spaced steps, or ``d`` when there are fewer players); ``shapley_error``
            also takes options of its ground truth: ``estimator`` (``"auto"``: exact enumeration up to 16 players,
            KernelSHAP beyond; ``"exact"``; ``"kernel"``), ``link`` (default: the learned explainer's, else
            ``"softmax"``), ``model_batch_size``, and for KernelSHAP ``max_evaluations`` and ``threshold``.
        method_kwargs: options of the method, keyed by its name (``{"integrated_gradients": {"steps": 16}}``).
        patch_size: player size in pixels when the module defines no players.
        masker: removal used by the metrics and by perturbation methods, a :func:`lit_xai.masking.build_masker`
            name (default: the module's own masker, else zero filling).
        masker_kwargs: options of ``masker``.
        network: dotted name of the submodule to explain (default: ``net.surrogate`` or ``model``).
        shapley_cache: a ``.pt`` file for the ground-truth Shapley values: read when it exists, written after they
            are computed (single process, frozen game only).

    Attributes:
        last_values: the values logged at the last evaluation.
        last_seconds: wall time of the last evaluation on this process.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("insertion_deletion",),
        method: str = "auto",
        num_samples: int = 64,
        batch_size: int = 32,
        every_n_epochs: int = 1,
        seed: int = 0,
        target: str = "auto",
        prefix: str = "val/",
        metric_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        patch_size: int | list[int] | None = None,
        masker: str | None = None,
        masker_kwargs: Mapping[str, Any] | None = None,
        network: str | None = None,
        shapley_cache: str | None = None,
    ) -> None:
        super().__init__()
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [name for name in metrics if name not in METRICS]
        if not metrics or unknown or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be distinct names among {tuple(METRICS)}, got {metrics!r}")
        self.metric_names = metrics
        self.method = check_method(method)
        self.method_kwargs = check_method_kwargs([self.method], method_kwargs)
        self.metric_kwargs = {name: dict(options or {}) for name, options in (metric_kwargs or {}).items()}
        stray = sorted(set(self.metric_kwargs) - set(metrics))
        if stray:
            raise ValueError(
                f"metric_kwargs has options for {stray}, which are not among the metrics {metrics}"
            )
        self.num_samples = check_num_samples(num_samples)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.every_n_epochs = check_every_n_epochs(every_n_epochs)
        self.seed = int(seed)
        self.target = check_target_mode(target)
        self.prefix = prefix
        self.patch_size = patch_size
        self.masker = masker
        self.masker_kwargs = dict(masker_kwargs or {})
        self.network = network
        self.shapley_cache = None if shapley_cache is None else Path(shapley_cache)
        self.indices: Tensor | None = None
        self.batch: dict[str, Tensor] | None = None
        self.explain_setup: ExplainSetup | None = None
        self.metrics: dict[str, Metric] = {}
        self.last_values: dict[str, float] = {}
        self.last_seconds: float | None = None
        self._truth: dict[int, tuple[int, Tensor]] = {}  # dataset index -> (class, Shapley values)
        self._truth_options: dict[str, Any] = {}
        self._unverified: set[int] = set()  # read from shapley_cache, not yet checked against the model

    # ------------------------------------------------------------------------------------------------------------
    # Setup: every check that can fail happens here, before the first training step
    # ------------------------------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        owner = type(self).__name__
        (setup,) = self._prepare(trainer, pl_module, stage, [self.method])
        if self.num_samples < trainer.world_size:  # after _prepare, which may lower num_samples to the data's
            raise ValueError(
                f"{owner}(num_samples={self.num_samples}) is smaller than the number of processes "
                f"({trainer.world_size}); give every process at least one input"
            )
        self.explain_setup = setup
        self.metrics = {name: self._build_metric(name, setup, pl_module) for name in self.metric_names}

    def _build_metric(self, name: str, setup: ExplainSetup, pl_module: L.LightningModule) -> Metric:
        """The metric from :mod:`lit_xai.metrics.registry` (defaults shared with ``evaluate.py``; curves at
        ``MONITOR_CURVE_STEPS`` points since this runs every epoch)."""
        options = dict(self.metric_kwargs.get(name, {}))
        if name == "localization":
            self._check_annotation()
        if name == "shapley_error":
            self._set_truth_options(options, setup, pl_module)
        return build_metric(
            name, masker=setup.masker, players=setup.players, options=options, monitoring=True
        )

    def _check_annotation(self) -> None:
        annotation = self.batch.get("annotation")
        if annotation is None:
            raise ValueError(
                "metric 'localization' scores explanations against human annotations, but the validation data "
                "has no 'annotation' (e.g. ShapesDataModule and DecoyDigitsDataModule have one); drop "
                "'localization' from metrics or use data with annotations"
            )
        x = self.batch["input"]
        layout = tuple(x.shape[2:]) if x.dim() == 4 else tuple(x.shape[1:])  # (H, W) or (F,)
        if tuple(annotation.shape[1:]) != layout:
            raise ValueError(
                f"annotations of shape {tuple(annotation.shape[1:])} do not match the inputs "
                f"{tuple(self.batch['input'].shape[1:])}; they must have the input's spatial shape (H, W) or (F,)"
            )

    def _set_truth_options(self, options: dict, setup: ExplainSetup, pl_module: L.LightningModule) -> None:
        """Move the ground-truth options out of ``options`` (what is left configures the score) and check them."""
        truth = {key: options.pop(key) for key in _GROUND_TRUTH_OPTIONS if key in options}
        truth.setdefault("link", getattr(getattr(pl_module, "net", None), "link", None) or "softmax")
        try:
            resolve_estimator(truth.get("estimator", "auto"), setup.players.num_players)
        except ValueError as err:
            raise ValueError(f"shapley_error: {err}") from None
        self._truth_options = truth
        if not self._game_is_frozen():
            warnings.warn(
                f"shapley_error: {type(setup.network).__name__} is trained in this run, so its ground-truth Shapley "
                f"values change and are recomputed at every evaluation ({self._cost(setup)} per input); they are "
                f"cached only for a frozen game (an explainer training against a fixed surrogate)",
                stacklevel=3,
            )
        self._load_truth()

    def _cost(self, setup: ExplainSetup) -> str:
        d = setup.players.num_players
        return f"2^{d} model evaluations" if self._estimator() == "exact" else "a converged KernelSHAP run"

    # ------------------------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------------------------

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.explain_setup is None or not due(trainer, self.every_n_epochs):
            return
        start = time.perf_counter()
        # Each process scores its own share; the metric states are summed across processes in compute().
        share = torch.arange(trainer.global_rank, self.num_samples, trainer.world_size)
        if not self._game_is_frozen():
            self._truth.clear()  # the game changes as the network trains: last evaluation's values are stale
        with explaining(pl_module):
            for metric in self.metrics.values():
                metric.reset()
                metric.to(pl_module.device)
            for rows in share.split(self.batch_size):
                self._update(pl_module, rows)
            values = self._compute()
        for name, value in values.items():
            # Every process holds the same synchronised value; "max" reduction passes it through unchanged
            # (a mean could round it) and keeps Lightning from asking for sync_dist.
            pl_module.log(name, value, sync_dist=True, reduce_fx="max", batch_size=1)
        self.last_values = {name: float(value) for name, value in values.items()}
        self.last_seconds = time.perf_counter() - start

    def _update(self, pl_module: L.LightningModule, rows: Tensor) -> None:
        setup = self.explain_setup
        x = self.batch["input"][rows].to(pl_module.device)
        labels = self.batch["target"][rows] if "target" in self.batch else None
        explanation = explain(setup, x, labels, self.target)
        values, target = explanation.attributions, explanation.target
        every_label = None
        for name, metric in self.metrics.items():
            if METRIC_REGISTRY[name].maps == "every_label":
                if every_label is None:
                    every_label = explain_every_label(setup, x, predict(setup, x).shape[-1])
                metric.update(setup.network, x, every_label, target)
            elif name in ("insertion_deletion", "eraser", "sensitivity_n"):
                metric.update(setup.network, x, values, target)
            elif name == "localization":
                metric.update(values, self.batch["annotation"][rows].to(x.device))
            else:
                metric.update(values, self._ground_truth(self.indices[rows], x, target).to(x.device))

    def _compute(self) -> dict[str, Tensor]:
        values = {}
        for name, metric in self.metrics.items():
            scores = metric.compute()
            label = "shapley_{}" if name == "shapley_error" else "{}"
            values.update({self.prefix + label.format(key): value for key, value in scores.items()})
        return values

    # ------------------------------------------------------------------------------------------------------------
    # Ground-truth Shapley values, cached per dataset index while the game is frozen
    # ------------------------------------------------------------------------------------------------------------

    def _game_is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.explain_setup.network.parameters())

    def _ground_truth(self, indices: Tensor, x: Tensor, target: Tensor) -> Tensor:
        cached = [self._truth.get(int(i)) for i in indices]
        fresh = [entry is not None and entry[0] == int(t) for entry, t in zip(cached, target)]
        unchecked = [row for row, ok in enumerate(fresh) if ok and int(indices[row]) in self._unverified]
        if unchecked:
            fresh = self._verify(indices, x, target, unchecked, fresh)
        missing = [row for row, ok in enumerate(fresh) if not ok]
        if missing:
            rows = torch.tensor(missing, device=x.device)
            truth = self._compute_truth(x[rows], target[rows])
            for row, values in zip(missing, truth.float().cpu()):
                self._truth[int(indices[row])] = (int(target[row]), values)
            self._save_truth()
        return torch.stack([self._truth[int(i)][1] for i in indices])

    def _game(self, x: Tensor, target: Tensor) -> ModelGame:
        setup, options = self.explain_setup, self._truth_options
        return ModelGame(
            setup.network,
            setup.masker,
            x,
            link=options["link"],
            batch_size=options.get("model_batch_size", 4096),
            target=target,
        )

    def _compute_truth(self, x: Tensor, target: Tensor) -> Tensor:
        """Shapley values ``(B, d)`` of the network's game, by the toolkit's one ground-truth rule."""
        setup, options = self.explain_setup, self._truth_options
        return shapley_ground_truth(
            setup.network,
            setup.masker,
            x,
            target,
            estimator=options.get("estimator", "auto"),
            link=options["link"],
            model_batch_size=options.get("model_batch_size", 4096),
            generator=torch.Generator().manual_seed(self.seed),
            **{key: options[key] for key in ("max_evaluations", "threshold") if key in options},
        )

    def _estimator(self) -> str:
        return resolve_estimator(
            self._truth_options.get("estimator", "auto"), self.explain_setup.players.num_players
        )

    def _verify(
        self, indices: Tensor, x: Tensor, target: Tensor, rows: list[int], fresh: list[bool]
    ) -> list[bool]:
        """Check values read from ``shapley_cache`` against the current game by efficiency, ``sum phi = v(all) - v(∅)``
        (exact for both estimators), so a cache written for another model is not silently reused."""
        index = torch.tensor(rows, device=x.device)
        game = self._game(x[index], target[index])
        gap = (game.grand() - game.null())[:, 0].float().cpu()
        stored = torch.stack([self._truth[int(indices[row])][1].sum() for row in rows])
        fresh = list(fresh)
        for row, ok in zip(rows, torch.isclose(stored, gap, rtol=1e-3, atol=1e-5)):
            self._unverified.discard(int(indices[row]))
            fresh[row] = bool(ok)
        if not all(fresh[row] for row in rows):
            warnings.warn(
                f"{self.shapley_cache}: some cached Shapley values do not add up to this model's predictions (written "
                f"for another model?); they are recomputed and the file is rewritten",
                stacklevel=2,
            )
        return fresh

    def _load_truth(self) -> None:
        if self.shapley_cache is None or not self.shapley_cache.is_file():
            return
        stored = safe_torch_load(self.shapley_cache)
        for index, target, values in zip(stored["indices"], stored["targets"], stored["values"]):
            self._truth[int(index)] = (int(target), values)
            self._unverified.add(int(index))

    def _save_truth(self) -> None:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if self.shapley_cache is None or not self._game_is_frozen() or distributed:
            return  # under DDP each process holds only its share of the values
        indices = sorted(self._truth)
        stored = {
            "indices": torch.tensor(indices),
            "targets": torch.tensor([self._truth[i][0] for i in indices]),
            "values": torch.stack([self._truth[i][1] for i in indices]),
        }
        atomic_save(stored, self.shapley_cache)
