"""Which explanation is most faithful for my model? One command compares learned explainers and baselines.

``python evaluate.py --config configs/eval/digits.yaml`` (see :mod:`lit_xai.evaluation.cli`) scores every method
the way the ViT Shapley paper's tables do (Covert, Kim & Lee, ICLR 2023): explanations of the surrogate's
predicted class, removal metrics (insertion/deletion, sensitivity-n, ERASER) through the surrogate and its masker,
localisation against annotations, error against ground-truth Shapley values, and the cost of each explanation.
The same pieces are usable from Python::

    from lit_xai.evaluation import EvaluationSettings, prepare
    module = prepare(EvaluationSettings(explainers=["explainer.ckpt"], output_dir="eval"), DigitsDataModule())
    L.Trainer(logger=False, inference_mode=False, use_distributed_sampler=False).test(module)
    module.results  # every number
"""

from lit_xai.evaluation.cli import main, prepare
from lit_xai.evaluation.config import METRICS, EvaluationSettings, build_parser, check_settings
from lit_xai.evaluation.methods import (
    Method,
    Scorer,
    build_methods,
    count_forward_rows,
    load_classifier,
    load_explainers,
    load_scorer,
)
from lit_xai.evaluation.module import EvaluationModule, GlobalBatches, SummedMeans
from lit_xai.evaluation.report import best_methods, format_table, markdown_report, write_outputs

__all__ = [
    "METRICS",
    "EvaluationModule",
    "EvaluationSettings",
    "GlobalBatches",
    "Method",
    "Scorer",
    "SummedMeans",
    "best_methods",
    "build_methods",
    "build_parser",
    "check_settings",
    "count_forward_rows",
    "format_table",
    "load_classifier",
    "load_explainers",
    "load_scorer",
    "main",
    "markdown_report",
    "prepare",
    "write_outputs",
]
