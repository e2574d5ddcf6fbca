"""The evaluation as a LightningModule: run every method on the test images and score it, on one device or many.

``trainer.test(EvaluationModule(...))`` explains each batch with every method (timing each call and counting the
forward passes it makes), scores the explanations with DDP-correct torchmetrics (:mod:`lit_xai.metrics`), and on
the last step gathers the results and, on rank zero, writes the report (:mod:`lit_xai.evaluation.report`).

Why the numbers do not depend on the number of processes: the test images are cut into fixed consecutive batches
and process ``r`` of ``W`` takes batches ``r, r + W, ...`` (:class:`GlobalBatches`), so every batch holds the same
images whatever ``W`` is, with no image repeated (a ``DistributedSampler`` pads with duplicates). Methods whose
result depends on the whole batch (KernelSHAP's shared coalitions and stopping rule, SmoothGrad's noise) or on
earlier calls (the random baseline's generator, reseeded per batch) therefore give the same values, and the metric
states are sums, added up across processes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, Subset
from torchmetrics import Metric

from lit_xai.algorithms.vit_shapley.evaluation import compare_with_kernel_shap
from lit_xai.data.base import class_names
from lit_xai.evaluation.config import accepted_options, resolve_ground_truth
from lit_xai.evaluation.methods import Method, Scorer, count_forward_rows
from lit_xai.evaluation.report import KERNEL_SCORES, collect_results, format_table, write_outputs
from lit_xai.ground_truth import shapley_ground_truth
from lit_xai.metrics import ShapleyError
from lit_xai.metrics.registry import METRICS as METRIC_REGISTRY
from lit_xai.metrics.registry import build_metric
from lit_xai.players import PatchGrid
from lit_xai.viz import prediction_caption

__all__ = ["EvaluationModule", "GlobalBatches", "SummedMeans"]

_GROUND_TRUTH_SEED = 7919  # offsets the ground truth's KernelSHAP seed from the KernelSHAP baseline's


class GlobalBatches(Sampler[list[int]]):
    """Batch sampler over consecutive batches of ``range(num_samples)``; process ``rank`` takes every
    ``world_size``-th batch starting at its rank, so global batch ``g`` always holds images ``[g B, (g + 1) B)``.

    A process left without a batch (more processes than batches) gets batch 0 as a placeholder, because Lightning
    refuses empty loaders; :meth:`is_placeholder` tells it to skip that batch.
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batching: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.num_samples, self.batch_size, self.rank = num_samples, batch_size, rank
        self.num_batches = -(-num_samples // batch_size)
        self.batches = range(rank, self.num_batches, world_size)

    def global_batch(self, batch_idx: int, world_size: int) -> int:
        return self.rank + world_size * batch_idx

    def is_placeholder(self, global_batch: int) -> bool:
        return global_batch >= self.num_batches

    def __iter__(self):
        for g in self.batches or [0]:
            yield list(range(g * self.batch_size, min((g + 1) * self.batch_size, self.num_samples)))

    def __len__(self) -> int:
        return max(1, len(self.batches))


class SummedMeans(Metric):
    """Means of per-image quantities from their sums and counts, added across batches and processes."""

    full_state_update = False

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, total: Tensor, count: Tensor | float) -> None:
        self.total += torch.as_tensor(total, dtype=torch.float64, device=self.total.device)
        self.count += torch.as_tensor(count, dtype=torch.float64, device=self.count.device)

    def compute(self) -> dict[str, Tensor]:
        """``{"mean": total / count (NaN where nothing was counted), "count": count}`` over all processes."""
        return {"mean": self.total / self.count, "count": self.count.clone()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EvaluationModule(L.LightningModule):
    """Explain the test images with every method and score the explanations.

    Args:
        scorer: the surrogate network and masker that score explanations (:func:`~lit_xai.evaluation.load_scorer`).
        methods: the explainers and baselines (:func:`~lit_xai.evaluation.build_methods`).
        data: a LightningDataModule with a test split of dict batches.
        metrics: names from :data:`~lit_xai.evaluation.config.METRICS`.
        metric_kwargs: per-metric options.
        target: explain the surrogate's ``"predicted"`` class or the ``"true"`` label.
        ground_truth: ``"auto"``, ``"exact"``, ``"kernel"`` or ``"none"`` (see :class:`EvaluationSettings`).
        ground_truth_images: ground truth for the first this many images only.
        kernel_budgets: evaluations per image at which KernelSHAP is compared with the first explainer.
        num_images: evaluate the first this many test images (``None``: all).
        model_batch_size: masked inputs per forward pass in metrics and ground truth.
        figure_images: images in the explanation grid.
        confidence: level of the confidence intervals.
        seed: seeds the metrics and the per-batch generators.
        output_dir: where rank zero writes the report (``None``: write nothing).
        config: the resolved configuration, stored in results.json.

    After ``trainer.test``, ``module.results`` holds every number (on every process).
    """

    def __init__(
        self,
        scorer: Scorer,
        methods: Sequence[Method],
        data: L.LightningDataModule,
        metrics: Sequence[str] = ("insertion_deletion",),
        metric_kwargs: Mapping[str, Mapping] | None = None,
        target: str = "predicted",
        ground_truth: str = "auto",
        ground_truth_images: int = 32,
        kernel_budgets: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        num_images: int | None = None,
        model_batch_size: int = 1024,
        figure_images: int = 6,
        confidence: float = 0.95,
        seed: int = 0,
        output_dir: str | None = None,
        config: Mapping | None = None,
    ) -> None:
        super().__init__()
        if target not in ("predicted", "true"):
            raise ValueError(f"target must be 'predicted' or 'true', got {target!r}")
        self.scorer, self.methods, self.data = scorer, list(methods), data
        self.surrogate = scorer.model
        # Every network the methods run, registered so that Lightning moves them to the device.
        networks = {
            id(n): n
            for m in self.methods
            for n in (*m.networks, m.amortized)
            if n is not None and n is not self.surrogate
        }
        self.networks = nn.ModuleList(networks.values())
        self.target, self.num_images, self.seed = target, num_images, seed
        self.model_batch_size, self.figure_images = model_batch_size, figure_images
        self.confidence, self.output_dir, self.config = confidence, output_dir, dict(config or {})
        self.ground_truth = resolve_ground_truth(ground_truth, scorer.masker.num_players)
        self.ground_truth_images = ground_truth_images
        explainers = [m for m in self.methods if m.kind == "explainer"]
        self.kernel_budgets = list(kernel_budgets) if self.ground_truth != "none" and explainers else []

        metric_kwargs = metric_kwargs or {}
        self.scores = nn.ModuleDict()
        for method in self.methods:
            self.scores[method.name] = nn.ModuleDict(
                {name: self._build_metric(name, dict(metric_kwargs.get(name, {}))) for name in metrics}
            )
        self.costs = nn.ModuleDict({m.name: SummedMeans(2) for m in self.methods})  # seconds, passes
        self.shapley = nn.ModuleDict(
            {m.name: ShapleyError() for m in self.methods} if self.ground_truth != "none" else {}
        )
        self.kernel_curve = (
            SummedMeans(len(self.kernel_budgets) * len(KERNEL_SCORES)) if self.kernel_budgets else None
        )
        self.figure: dict | None = None
        self.results: dict | None = None

    def _build_metric(self, name: str, kwargs: dict) -> Metric:
        """The metric from :mod:`lit_xai.metrics.registry`, with the defaults ``ExplanationQuality`` uses too."""
        if METRIC_REGISTRY[name].needs == "masker":  # the settings a removal metric takes, when it takes them
            accepted = accepted_options(METRIC_REGISTRY[name].cls)
            for key, value in (("batch_size", self.model_batch_size), ("seed", self.seed)):
                if key in accepted:
                    kwargs.setdefault(key, value)
        return build_metric(name, masker=self.scorer.masker, players=self.scorer.players, options=kwargs)

    # ---------------------------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def test_dataloader(self) -> DataLoader:
        self.data.setup("test")
        loader = self.data.test_dataloader()
        dataset = loader.dataset
        count = len(dataset) if self.num_images is None else min(self.num_images, len(dataset))
        rank, world_size = self._world()
        self.batch_size = loader.batch_size or 1
        self.batches = GlobalBatches(count, self.batch_size, rank, world_size)
        return DataLoader(
            Subset(dataset, range(count)),
            batch_sampler=self.batches,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
        )

    def _explain(
        self, method: Method, x: Tensor, target: Tensor, batch_seed: int
    ) -> tuple[Tensor, float, int]:
        if method.generator is not None:
            method.generator.manual_seed(batch_seed)
        _synchronize(x.device)
        start = time.perf_counter()
        with count_forward_rows(method.networks) as rows:
            values = method.explain(x, target)
        _synchronize(x.device)
        seconds = time.perf_counter() - start
        expected = (x.shape[0], self.scorer.masker.num_players)
        if not isinstance(values, Tensor) or tuple(values.shape) != expected:
            raise ValueError(
                f"{method.name} returned {getattr(values, 'shape', type(values))}, expected one value per player "
                f"{expected}"
            )
        return values.detach().float(), seconds, rows[0]

    def _explain_every_label(self, method: Method, x: Tensor, num_classes: int, batch_seed: int) -> Tensor:
        """Maps of every class ``(B, d, C)``, untimed: an evaluation cost, not the method's."""
        maps = []
        for c in range(num_classes):
            if method.generator is not None:
                method.generator.manual_seed(batch_seed)
            maps.append(method.explain(x, torch.full((x.shape[0],), c, device=x.device)).detach().float())
        return torch.stack(maps, dim=-1)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        x, labels = batch["input"], batch["target"]
        global_batch = self.batches.global_batch(batch_idx, self._world()[1])
        if self.batches.is_placeholder(global_batch):
            return
        first_index = global_batch * self.batch_size
        batch_seed = (self.seed * 1_000_003 + global_batch) % 2**62
        with torch.no_grad():
            everyone = torch.ones(
                x.shape[0], self.scorer.masker.num_players, dtype=torch.bool, device=x.device
            )
            probs = self.scorer.masker(self.surrogate, x, everyone).softmax(-1)
        target = probs.argmax(-1) if self.target == "predicted" else labels.long()
        if batch_idx == 0:
            # Warm-up (lazy initialisation, kernel selection, caches such as v(∅)): neither timed nor counted.
            for method in self.methods:
                method.explain(x[:1], target[:1])

        attributions = {}
        for method in self.methods:
            values, seconds, passes = self._explain(method, x, target, batch_seed)
            attributions[method.name] = values
            self.costs[method.name].update(torch.tensor([seconds, passes]), x.shape[0])
            every_label = None
            for name, metric in self.scores[method.name].items():
                if METRIC_REGISTRY[name].maps == "every_label":
                    if every_label is None:  # soundness scores the maps of the classes not predicted too
                        every_label = self._explain_every_label(method, x, probs.shape[-1], batch_seed)
                    metric.update(self.surrogate, x, every_label, target)
                elif name != "localization":
                    metric.update(self.surrogate, x, values, target)
                elif "annotation" in batch:
                    metric.update(values, batch["annotation"])

        chosen = (
            torch.arange(first_index, first_index + x.shape[0], device=x.device) < self.ground_truth_images
        )
        if self.ground_truth != "none" and bool(chosen.any()):
            self._score_ground_truth(
                x[chosen], target[chosen], {k: v[chosen] for k, v in attributions.items()}
            )
        if global_batch == 0 and self.figure_images > 0:
            self._keep_figure(x, labels, target, probs, attributions)

    def _score_ground_truth(self, x: Tensor, target: Tensor, attributions: Mapping[str, Tensor]) -> None:
        truth = shapley_ground_truth(
            self.surrogate,
            self.scorer.masker,
            x,
            target,
            estimator=self.ground_truth,
            link=self.scorer.link,
            model_batch_size=self.model_batch_size,
            generator=torch.Generator().manual_seed(self.seed + _GROUND_TRUTH_SEED),
        )
        for name, values in attributions.items():
            self.shapley[name].update(values, truth)
        if self.kernel_budgets:
            explainer = next(m for m in self.methods if m.kind == "explainer")
            comparison = compare_with_kernel_shap(
                explainer.amortized,
                x,
                target,
                truth,
                self.kernel_budgets,
                batch_size=self.model_batch_size,
                seed=self.seed,
            )
            total = torch.full(
                (len(self.kernel_budgets), len(KERNEL_SCORES)), float("nan"), dtype=torch.float64
            )
            count = torch.zeros_like(total)
            for i, budget in enumerate(self.kernel_budgets):
                if budget in comparison.kernel_shap:
                    errors = comparison.kernel_shap[budget]
                    total[i] = torch.tensor(
                        [errors[s] * x.shape[0] for s in KERNEL_SCORES], dtype=torch.float64
                    )
                    count[i] = x.shape[0]
            self.kernel_curve.update(total.nan_to_num(0.0).flatten(), count.flatten())

    def _keep_figure(self, x, labels, target, probs, attributions) -> None:
        k = min(self.figure_images, x.shape[0])
        players = self.scorer.players
        names = class_names(self.data)
        self.figure = {
            "images": x[:k].detach().cpu(),
            "captions": [
                prediction_caption(int(p), float(probs[i, p]), int(labels[i]), names)
                for i, p in enumerate(probs[:k].argmax(-1))
            ],
            "target": target[:k].cpu(),
            "maps": {
                name: (players.upsample(v[:k]) if isinstance(players, PatchGrid) else v[:k]).cpu()
                for name, v in attributions.items()
            },
        }

    def on_test_epoch_end(self) -> None:
        # Every process takes part in the synchronisations inside collect_results; only rank zero writes.
        self.results = collect_results(self)
        if self.trainer.is_global_zero and self.output_dir is not None:
            write_outputs(self.results, self.figure, self.output_dir, self.config)

    def on_test_end(self) -> None:
        # After the progress bar has closed (callbacks' on_test_end run first), so the table is not torn.
        if self.trainer.is_global_zero and self.results is not None:
            print("\n" + format_table(self.results))
            for note in self.results["notes"]:
                print(f"- {note}")
            if self.output_dir is not None:
                print(f"[evaluate] wrote results.json, results.md and figures to {self.output_dir}")
