"""Explain test images with InputIBA (and IBA) from a config: ``python -m lit_xai.algorithms.input_iba --config
configs/shapes/input_iba.yaml``.

The config names the classifier (a lit_xai checkpoint, or any timm/small model with local weights), the data
(a LightningDataModule by class path), the layer statistics' sample counts, the explainers' hyperparameters and
how many test images to explain. Written to ``output_dir``: ``statistics.pt`` (reusable, weights-only),
``maps.pt`` (every stage's maps, the images, targets and annotations when the data has them) and ``maps.png``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
import yaml

from lit_xai.algorithms.input_iba.explainer import IBA, InputIBA
from lit_xai.io import atomic_save
from lit_xai.models import build_model
from lit_xai.models.factory import backbone_from_checkpoint


def build_classifier(config: dict) -> torch.nn.Module:
    """The model named by ``classifier_checkpoint`` (written by train.py) or ``model: {name, num_classes, ...}``."""
    if config.get("classifier_checkpoint"):
        model, _ = backbone_from_checkpoint(config["classifier_checkpoint"])
        return model
    spec = dict(config.get("model") or {})
    if "name" not in spec or "num_classes" not in spec:
        raise ValueError(
            "the config needs classifier_checkpoint: <path> or model: {name: ..., num_classes: ...}"
        )
    return build_model(spec.pop("name"), spec.pop("num_classes"), **spec)


def build_data(config: dict):
    """Instantiate ``data: {class_path, init_args}`` as LightningCLI does."""
    spec = config.get("data") or {}
    if "class_path" not in spec:
        raise ValueError("the config needs data: {class_path: lit_xai.data.<DataModule>, init_args: {...}}")
    module_name, _, class_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**(spec.get("init_args") or {}))


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


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/shapes/input_iba.yaml")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    device = torch.device(config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_classifier(config).to(device).eval()
    data = build_data(config)
    data.setup("fit")
    explainer = InputIBA(model, **config["explainer"], progress=True)
    stats = explainer.estimate(data.train_dataloader(), **(config.get("statistics") or {}))
    output = Path(config.get("output_dir", "outputs/input_iba"))
    explainer.save(output / "statistics.pt")

    num_images = int(config.get("num_images", 16))
    batch = next(iter(torch.utils.data.DataLoader(data.test_dataset, batch_size=num_images, shuffle=False)))
    x = batch["input"].to(device)
    target = None if config.get("target", "label") == "predicted" else batch["target"].to(device)
    result = explainer.explain(x, target)
    maps = {
        "InputIBA": result["input"].cpu(),
        "prior": result["prior"].cpu(),
        "feature IBA": result["feature"].cpu(),
    }
    if config.get("iba") is not None:
        iba = IBA(
            model, config["explainer"]["layer"], stats, batch_size=explainer.batch_size, **config["iba"]
        )
        maps["IBA"] = iba.attribute(x, target).cpu()
    state = {"input": x.cpu(), "target": batch["target"], **maps}
    if "annotation" in batch:
        state["annotation"] = batch["annotation"]
    atomic_save(state, output / "maps.pt")
    save_figure(
        output / "maps.png",
        x.cpu(),
        {**({"annotation": batch["annotation"]} if "annotation" in batch else {}), **maps},
    )
    print(f"wrote {output / 'maps.pt'} and {output / 'maps.png'}")
    return maps


if __name__ == "__main__":
    main()
