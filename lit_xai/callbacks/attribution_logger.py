"""Watch explanations evolve during training: attribution heatmaps of fixed validation inputs, every few epochs.

A callback for any lit_xai training stage. After each validation epoch it explains the same few validation inputs
with the module's own learned explainer (ViT Shapley / FastSHAP: Covert, Kim & Lee, ICLR 2023; Jethani et al., ICLR
2022) or a baseline from :mod:`lit_xai.attribution`, and logs one panel per input — the image beside its heatmap,
captioned with the predicted and true class and the predicted probability — to W&B, TensorBoard, or PNG files (see
:mod:`lit_xai.callbacks._loggers`). Tabular inputs get a bar chart of the largest feature attributions instead.

The callback runs on rank zero only, skips Lightning's sanity check, computes under ``torch.enable_grad()`` where the
method differentiates, leaves the model's train/eval modes, ``requires_grad`` flags and batch-norm statistics as it
found them, and does not touch the random state of training.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from lit_xai.callbacks._common import (
    ExplanationCallback,
    check_every_n_epochs,
    check_method,
    check_method_kwargs,
    check_num_samples,
    check_target_mode,
    due,
)
from lit_xai.callbacks._explain import ExplainSetup, Explanation, explain, explaining, predict
from lit_xai.callbacks._loggers import Panels, log_panels
from lit_xai.data.base import class_names
from lit_xai.io import atomic_open
from lit_xai.viz import (
    explanation_grid,
    feature_bars,
    figure_to_array,
    heatmap_overlay,
    prediction_caption,
    save_figure,
    tile_images,
)

__all__ = ["AttributionLogger"]

#: More panels than this per evaluation make a W&B media panel unreadable and slow to load.
MAX_PANELS = 48


class AttributionLogger(ExplanationCallback):
    """Log attribution heatmaps (or bar charts for tabular data) of fixed validation inputs.

    Args:
        method: ``"self"`` (the module's own learned explainer, ``pl_module.attribute``), a baseline name from
            :data:`lit_xai.attribution.ATTRIBUTIONS` (``"gradient"``, ``"integrated_gradients"``, ``"gradcam"``,
            ``"attention_rollout"``, ``"leave_one_out"``, ...), a list of them (one key per method), or ``"auto"``
            (the module's own explainer if it has one, else ``"gradient"``).
        num_samples: validation inputs explained (drawn once with ``seed``, the same every epoch).
        every_n_epochs: explain after every n-th validation epoch.
        seed: seed of the draw of the inputs.
        target: the class explained: ``"auto"`` (the label where the data has labels, else the prediction),
            ``"true"`` or ``"predicted"``.
        method_kwargs: options per method name, e.g. ``{"integrated_gradients": {"steps": 16}}``.
        patch_size: player size in pixels when the module defines no players (default: a ViT's patch size, else
            about 8x8 cells over the image).
        masker: removal for perturbation methods, a :func:`lit_xai.masking.build_masker` name (default: the
            module's own masker, else zero filling).
        masker_kwargs: options of ``masker``.
        network: dotted name of the submodule to explain (default: ``net.surrogate`` or ``model``).
        key: logger key prefix; images go under ``<key>/<method>``.
        alpha: heatmap opacity.
        feature_names: column names for tabular bar charts (default: the DataModule's ``feature_names``).
        top_k: bars per tabular chart.

    Attributes:
        last_seconds: wall time of the last evaluation (computation and logging), for overhead checks.
    """

    def __init__(
        self,
        method: str | Sequence[str] = "auto",
        num_samples: int = 8,
        every_n_epochs: int = 1,
        seed: int = 0,
        target: str = "auto",
        method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        patch_size: int | list[int] | None = None,
        masker: str | None = None,
        masker_kwargs: Mapping[str, Any] | None = None,
        network: str | None = None,
        key: str = "explanations",
        alpha: float = 0.6,
        feature_names: Sequence[str] | None = None,
        top_k: int = 10,
    ) -> None:
        super().__init__()
        methods = [method] if isinstance(method, str) else list(method)
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"method must be a name or a list of distinct names, got {method!r}")
        self.methods = [check_method(name) for name in methods]
        self.num_samples = check_num_samples(num_samples)
        if self.num_samples * len(self.methods) > MAX_PANELS:
            raise ValueError(
                f"num_samples x methods = {self.num_samples * len(self.methods)} images per evaluation; keep it at "
                f"most {MAX_PANELS} (dashboards become unreadable): lower num_samples or log fewer methods"
            )
        self.every_n_epochs = check_every_n_epochs(every_n_epochs)
        self.seed = int(seed)
        self.target = check_target_mode(target)
        self.method_kwargs = check_method_kwargs(self.methods, method_kwargs)
        self.patch_size = patch_size
        self.masker = masker
        self.masker_kwargs = dict(masker_kwargs or {})
        self.network = network
        self.key = key.rstrip("/")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.feature_names = None if feature_names is None else list(feature_names)
        self.top_k = int(top_k)
        self.indices: Tensor | None = None
        self.batch: dict[str, Tensor] | None = None
        self.setups: list[ExplainSetup] = []
        self.last_seconds: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        self.setups = self._prepare(trainer, pl_module, stage, self.methods)
        x = self.batch["input"]
        if self.feature_names is None and x.dim() == 2:
            names = getattr(trainer.datamodule, "feature_names", None)
            self.feature_names = list(names) if names is not None and len(names) == x.shape[1] else None

    def _should_run(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and bool(self.setups) and due(trainer, self.every_n_epochs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_run(trainer):
            return
        start = time.perf_counter()
        x = self.batch["input"]
        labels = self.batch.get("target")
        panels = {}
        with explaining(pl_module):
            device_x = x.to(pl_module.device)
            predictions: dict[
                tuple[int, int], Tensor
            ] = {}  # one forward pass per (network, masker), not per method
            for setup in self.setups:
                key = (id(setup.network), id(setup.masker))
                if key not in predictions:
                    predictions[key] = predict(setup, device_x)
                explanation = explain(setup, device_x, labels, self.target, predictions[key])
                captions = self._captions(labels, predictions[key], class_names(trainer.datamodule))
                panels[f"{self.key}/{setup.method}"] = self._render(setup, x, captions, explanation)
        self._log(trainer, panels)
        self.last_seconds = time.perf_counter() - start

    def _log(self, trainer: L.Trainer, panels: dict[str, Panels]) -> list[Path]:
        """Hand one evaluation's panels to the loggers; returns the PNG files written."""
        return log_panels(trainer, panels)

    def _captions(
        self, labels: Tensor | None, probabilities: Tensor, names: list[str] | None = None
    ) -> list[str]:
        """``"pred cat (0.98) / true dog"``: the predicted class and its probability, and the label where known."""
        probabilities = probabilities.cpu()
        predicted = probabilities.argmax(-1)
        return [
            prediction_caption(
                int(p), float(probabilities[i, p]), None if labels is None else int(labels[i]), names
            )
            for i, p in enumerate(predicted)
        ]

    def _render(
        self, setup: ExplainSetup, x: Tensor, captions: list[str], explanation: Explanation
    ) -> Panels:
        """One panel per input: the image beside its heatmap, or a bar chart for tabular rows."""
        values = explanation.attributions.cpu()
        if x.dim() == 4:
            heat = setup.players.upsample(values)
            panels = [heatmap_overlay(x[i], heat[i], self.alpha) for i in range(x.shape[0])]

            def write_png(path: Path) -> None:
                figure = explanation_grid(x, {setup.method: heat}, titles=captions, alpha=self.alpha)
                save_figure(figure, path)
                plt.close(figure)

        else:
            per_feature = setup.players.upsample(values)
            panels = []
            for i in range(x.shape[0]):
                figure = feature_bars(per_feature[i], self.feature_names, title=captions[i], top_k=self.top_k)
                panels.append(figure_to_array(figure))
                plt.close(figure)

            def write_png(path: Path) -> None:
                _write_array(tile_images(panels, columns=2), path)

        return Panels(panels, captions, write_png)


def _write_array(image: np.ndarray, path: Path) -> None:
    """Write an RGB array as a PNG through a temporary file (a crash leaves no truncated image)."""
    with atomic_open(path, "wb") as handle:
        plt.imsave(handle, image, format="png")
