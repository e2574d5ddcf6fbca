"""Explain test images with InputIBA (and IBA) from a config: ``python -m lit_xai.algorithms.input_iba --config
configs/shapes/input_iba.yaml``.

The config names the classifier (``model``: a ``train.py`` checkpoint, a timm name with local weights or a factory,
as in ``evaluate.py``), the data (a LightningDataModule by class path), the layer statistics' sample counts, the
explainers' hyperparameters and how many test images to explain. Every key is also a flag
(``--explainer.gan.epochs 5``), ``--print_config`` shows the resolved config, and a misspelled key is an error.
Written to ``output_dir``: ``statistics.pt`` (reusable, weights-only), ``maps.pt`` (every stage's maps, the images,
targets and annotations when the data has them), ``prior.pt`` (the learned priors' weights) and ``maps.png``.

A killed run resumes: run the same command again. Its progress is kept in ``output_dir/resume`` (finished chunks
of images, the GAN state every ``save_every`` steps; :mod:`lit_xai.algorithms.input_iba.resume`) and it ends with
the same weights and maps, bit for bit, as a run never stopped; the folder is removed at the end. One run at a time
holds ``output_dir`` (:mod:`lit_xai.run_lock`).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from lit_xai.algorithms.input_iba.bottleneck import BottleneckConfig
from lit_xai.algorithms.input_iba.explainer import FEATURE_DEFAULTS, IBA, INPUT_DEFAULTS, InputIBA
from lit_xai.algorithms.input_iba.prior import GANConfig
from lit_xai.io import atomic_save
from lit_xai.models import ClassifierSpec, load_classifier_spec
from lit_xai.run_lock import hold_output_folders

__all__ = ["ExplainerSettings", "InputIBARun", "StatisticsSettings", "build_parser", "main", "run"]


@dataclass
class StatisticsSettings:
    """Samples for the layer statistics (:func:`lit_xai.algorithms.input_iba.estimate_layer_statistics`).

    Args:
        num_samples: training samples to read (IBA recommends 10,000; at least ``min_samples``).
        min_samples: refuse to estimate from fewer.
    """

    num_samples: int = 10_000
    min_samples: int = 1000


@dataclass
class ExplainerSettings:
    """The :class:`InputIBA` explainer.

    Args:
        layer: the feature bottleneck's layer (a name from ``model.named_modules()``).
        batch_size: images optimised together in every stage (memory grows with ``batch_size * copies``).
        seed: seed of every image's random streams.
        feature: stage 1, IBA at ``layer``.
        gan: stage 2, the generative prior.
        input: stage 3, the bottleneck on the input against the learned prior.
        num_prefix_tokens: for ViT layers, class/register tokens to drop (``null``: inferred).
    """

    layer: str
    batch_size: int = 32
    seed: int = 0
    feature: BottleneckConfig = field(default_factory=lambda: BottleneckConfig(**FEATURE_DEFAULTS))
    gan: GANConfig = field(default_factory=GANConfig)
    input: BottleneckConfig = field(default_factory=lambda: BottleneckConfig(**INPUT_DEFAULTS))
    num_prefix_tokens: int | None = None


@dataclass
class InputIBARun:
    """What to explain and how.

    Args:
        model: the classifier (:class:`lit_xai.models.ClassifierSpec`: ``checkpoint``, ``timm`` + ``weights`` or
            ``factory``).
        explainer: the InputIBA settings.
        statistics: samples for the layer statistics.
        iba: settings of the plain IBA baseline to compare with (``null``: none).
        num_images: test images to explain (the first ones of the test split).
        target: explain the true ``label`` or the ``predicted`` class.
        output_dir: where statistics.pt, maps.pt and maps.png go.
        device: ``cuda``, ``cpu``, ... (``null``: CUDA when available).
        save_every: GAN steps between two saves of the run's progress (for resuming a killed run).
    """

    model: ClassifierSpec
    explainer: ExplainerSettings
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    iba: BottleneckConfig | None = None
    num_images: int = 16
    target: Literal["label", "predicted"] = "label"
    output_dir: str = "outputs/input_iba"
    device: str | None = None
    save_every: int = 10


def build_parser() -> ArgumentParser:
    """``--config``, the :class:`InputIBARun` settings and ``data`` (a LightningDataModule by class path)."""
    parser = ArgumentParser(
        prog="python -m lit_xai.algorithms.input_iba", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/*/input_iba.yaml)")
    parser.add_class_arguments(InputIBARun, None)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    return parser


def save_figure(path: Path, x: torch.Tensor, maps: dict[str, torch.Tensor], rows: int = 6) -> None:
    """One row per image: the image, then each map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(x))
    fig, axes = plt.subplots(rows, 1 + len(maps), figsize=(2 * (1 + len(maps)), 2 * rows), squeeze=False)
    for i in range(rows):
        image = x[i].permute(1, 2, 0)
        axes[i, 0].imshow(((image - image.min()) / (image.max() - image.min() + 1e-12)).squeeze(-1).numpy())
        for j, (name, values) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(values[i].numpy(), cmap="inferno")
            if i == 0:
                axes[i, j].set_title(name)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(settings: InputIBARun, data: L.LightningDataModule) -> dict[str, torch.Tensor]:
    """Estimate the statistics, explain the first ``num_images`` test images and write the outputs."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_classifier_spec(settings.model).to(device).eval()
    data.setup("fit")
    cfg = settings.explainer
    explainer = InputIBA(
        model, cfg.layer, feature=cfg.feature, gan=cfg.gan, input=cfg.input, batch_size=cfg.batch_size,
        seed=cfg.seed, progress=True, num_prefix_tokens=cfg.num_prefix_tokens,
    )  # fmt: skip
    output = Path(settings.output_dir)
    with hold_output_folders([output], options="--output_dir"):
        return _explain(settings, data, model, explainer, output, device)


def _explain(
    settings: InputIBARun, data, model, explainer: InputIBA, output: Path, device
) -> dict[str, torch.Tensor]:
    cfg = settings.explainer
    state_dir = output / "resume"
    if (output / "statistics.pt").is_file() and state_dir.is_dir():
        # A killed run's: its statistics went into the fingerprints of the progress kept in state_dir.
        stats = explainer.load(output / "statistics.pt", config=False).statistics
    else:
        stats = explainer.estimate(
            data.train_dataloader(), settings.statistics.num_samples, settings.statistics.min_samples
        )
        explainer.save(output / "statistics.pt")

    loader = torch.utils.data.DataLoader(data.test_dataset, batch_size=settings.num_images, shuffle=False)
    batch = next(iter(loader))
    x = batch["input"].to(device)
    target = None if settings.target == "predicted" else batch["target"].to(device)
    result = explainer.explain(x, target, state_dir=state_dir, save_every=settings.save_every)
    maps = {
        "InputIBA": result["input"].cpu(),
        "prior": result["prior"].cpu(),
        "feature IBA": result["feature"].cpu(),
    }
    if settings.iba is not None:
        iba = IBA(
            model, cfg.layer, stats, cfg.batch_size, cfg.seed, num_prefix_tokens=cfg.num_prefix_tokens,
            **asdict(settings.iba),
        )  # fmt: skip
        maps["IBA"] = iba.attribute(x, target).cpu()
    state = {"input": x.cpu(), "target": batch["target"], **maps}
    if "annotation" in batch:
        state["annotation"] = batch["annotation"]
    atomic_save(state, output / "maps.pt")
    atomic_save({key: value.cpu() for key, value in result["generator"].items()}, output / "prior.pt")
    save_figure(
        output / "maps.png",
        x.cpu(),
        {**({"annotation": batch["annotation"]} if "annotation" in batch else {}), **maps},
    )
    print(f"wrote {output / 'maps.pt'} and {output / 'maps.png'}")
    return maps


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Parse the config and flags (``sys.argv`` by default), then :func:`run`; returns the maps."""
    from lit_xai.cli import check_config_files

    check_config_files(
        sys.argv[1:] if argv is None else argv
    )  # a mistyped --config: one line, the closest file
    parser = build_parser()
    cfg = parser.parse_args(argv)
    objects = parser.instantiate(cfg)
    settings = InputIBARun(**{key: objects[key] for key in InputIBARun.__dataclass_fields__})
    return run(settings, objects.data)


if __name__ == "__main__":
    from lit_xai.cli import user_errors_exit

    with user_errors_exit():
        main()
