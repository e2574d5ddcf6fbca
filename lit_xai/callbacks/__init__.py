"""Lightning callbacks that watch explanations while a model trains.

- :class:`AttributionLogger`: heatmaps (or tabular bar charts) of fixed validation inputs, logged to W&B,
  TensorBoard or PNG files after every n-th validation epoch.
- :class:`ModelCheckpoint`: Lightning's, with a ``last.ckpt`` that always holds the latest state (``train.py``
  uses it in place of Lightning's own).
- :class:`ExplanationQuality`: insertion/deletion AUC, error against ground-truth Shapley values, localisation
  and more as validation metrics (``val/deletion_auc``, ...), DDP-correct, so ``ModelCheckpoint`` can select
  checkpoints by explanation quality.

In a LightningCLI config::

    trainer:
      callbacks:
        - class_path: lit_xai.callbacks.AttributionLogger
          init_args: {method: gradient, num_samples: 8}
        - class_path: lit_xai.callbacks.ExplanationQuality
          init_args: {metrics: [insertion_deletion], method: gradient, num_samples: 64}

Cost: as configured in ``configs/digits/{classifier,surrogate,explainer}.yaml`` they take about 7%, 8% and 2% of an
epoch's CPU time on two CPU cores (time inside the callbacks over the rest of the same epoch, median over epochs);
exact ground-truth Shapley values are a one-off cost, cached while the game is frozen.
"""

from lit_xai.callbacks.attribution_logger import AttributionLogger
from lit_xai.callbacks.checkpoint import ModelCheckpoint
from lit_xai.callbacks.explanation_quality import METRICS, ExplanationQuality
from lit_xai.callbacks.finite_loss import FiniteLossGuard, NonFiniteError

__all__ = [
    "AttributionLogger",
    "ExplanationQuality",
    "METRICS",
    "FiniteLossGuard",
    "ModelCheckpoint",
    "NonFiniteError",
]
