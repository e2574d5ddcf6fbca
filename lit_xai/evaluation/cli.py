"""``python evaluate.py --config configs/eval/digits.yaml``: which explanation is most faithful for my model?

Loads the scoring surrogate, the learned explainers and the baselines, runs them over the test split through a
Lightning ``Trainer`` (``trainer.test``, so ``--trainer.devices 8 --trainer.strategy ddp`` works and gives the same
numbers) and writes results.json, results.md and figures to ``output_dir``. Every config key is also a flag
(``--num_images 64``, ``--baselines '[gradient, rise]'``); ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import lightning as L

from lit_xai.cli import check_config_files
from lit_xai.evaluation.config import EvaluationSettings, build_parser, check_settings
from lit_xai.evaluation.methods import build_methods, load_classifier, load_explainers, load_scorer
from lit_xai.evaluation.module import EvaluationModule
from lit_xai.models import ClassifierSpec

__all__ = ["main", "prepare"]


def prepare(
    settings: EvaluationSettings, data: L.LightningDataModule, config: dict | None = None
) -> EvaluationModule:
    """Check the settings, load the models and build the methods and metrics: everything before the first image.

    Raises:
        ValueError, FileNotFoundError: bad settings, with a message naming the fix.
    """
    explainer_paths = check_settings(settings)
    explainers = load_explainers(explainer_paths)
    scorer = load_scorer(settings.surrogate_checkpoint, explainers, settings.model)
    classifier = load_classifier(settings.classifier_checkpoint) if settings.classifier_checkpoint else None
    methods = build_methods(
        scorer,
        explainers,
        settings.baselines,
        settings.baseline_kwargs,
        classifier,
        seed=settings.seed,
        own_methods=settings.own_methods,
        captum_methods=settings.captum_methods,
    )
    return EvaluationModule(
        scorer,
        methods,
        data,
        metrics=settings.metrics,
        metric_kwargs=settings.metric_kwargs,
        target=settings.target,
        ground_truth=settings.ground_truth,
        ground_truth_images=settings.ground_truth_images,
        kernel_budgets=settings.kernel_budgets,
        num_images=settings.num_images,
        model_batch_size=settings.model_batch_size,
        figure_images=settings.figure_images,
        confidence=settings.confidence,
        seed=settings.seed,
        output_dir=settings.output_dir,
        config=config,
    )


def main(args: list[str] | None = None) -> dict[str, Any] | None:
    """Run the evaluation from command-line arguments (``sys.argv`` by default); returns the results.

    Bad settings end the program with one ``error:`` line and exit status 2 before any work.
    """
    argv = sys.argv[1:] if args is None else args
    try:
        check_config_files(argv)  # a mistyped --config path: one line naming the closest file, not the usage
    except FileNotFoundError as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    parser = build_parser()
    cfg = parser.parse_args(args)
    # Our batches are partitioned across processes without padding (see GlobalBatches): Lightning must not add
    # a DistributedSampler on top.
    cfg.trainer.use_distributed_sampler = False
    names = set(EvaluationSettings.__dataclass_fields__)
    settings = EvaluationSettings(**{key: cfg[key] for key in names})
    if settings.model is not None and not isinstance(settings.model, ClassifierSpec):  # parsed as a Namespace
        settings.model = ClassifierSpec(**settings.model.as_dict())
    config = cfg.clone().as_dict()
    config.pop("config", None)
    config["command"] = "python evaluate.py " + shlex.join(argv)
    try:
        check_settings(
            settings
        )  # before the Trainer is built: a typo costs one line, not a page of start-up logs
        L.seed_everything(settings.seed, verbose=False)
        objects = parser.instantiate(cfg)
        module = prepare(settings, objects.data, config)
    except (ValueError, FileNotFoundError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    objects.trainer.test(module)
    return module.results
