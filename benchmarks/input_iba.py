"""InputIBA vs IBA, integrated gradients, GradCAM and gradients on synthetic shapes with ground-truth masks.

Zhang et al. (NeurIPS 2021) claim that InputIBA's input bottleneck with a learned generative prior localises
more finely than IBA's feature bottleneck (Schulz et al., ICLR 2020). On ``ShapesDataModule`` the pixels that
decide the label are known (the red shape), so localisation is measured exactly: effective heat ratio AUC,
relevance-mass accuracy and the pointing game; faithfulness by insertion (from a blurred image) and deletion
(to zeros) over 2x2-pixel players. Every method's seconds per image are recorded, and InputIBA is run a second
time one image at a time (``batch_size=1``, the same seeds) to measure the batching speed-up and check that the
maps are the same.

A SmallCNN is trained in-process first (about a minute). ``python benchmarks/input_iba.py`` writes
``benchmarks/results/input_iba.json`` and ``benchmarks/results/input_iba.png``; ``--gan-epochs`` and
``--num-images`` trade fidelity to the paper's settings for time (the JSON records what was used).
"""

from __future__ import annotations

import argparse
import copy
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, command_line, environment, print_table, write_json  # noqa: E402
from lit_xai.algorithms.input_iba import IBA, InputIBA  # noqa: E402
from lit_xai.attribution import GradCAM, Gradient, IntegratedGradients  # noqa: E402
from lit_xai.data import ShapesDataModule  # noqa: E402
from lit_xai.io import atomic_open  # noqa: E402
from lit_xai.masking import BaselineFill  # noqa: E402
from lit_xai.metrics.functional import insertion_deletion, localization, mean_confidence_interval  # noqa: E402
from lit_xai.models import SmallCNN  # noqa: E402
from lit_xai.players import PatchGrid  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes" / "input_iba.yaml"


def train_classifier(data: ShapesDataModule, channels: list[int], epochs: int, seed: int = 0):
    """Plain AdamW training of the CNN to be explained; returns ``(model, test accuracy, seconds)``."""
    torch.manual_seed(seed)
    model = SmallCNN(3, data.num_classes, channels=channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in data.train_dataloader():
            loss = F.cross_entropy(model(batch["input"]), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval().requires_grad_(False)
    correct = total = 0
    with torch.no_grad():
        for batch in data.test_dataloader():
            correct += (model(batch["input"]).argmax(-1) == batch["target"]).sum().item()
            total += len(batch["target"])
    return model, correct / total, time.perf_counter() - start


def timed(fn):
    """``(result, wall seconds, CPU seconds of this process)``: CPU time is less sensitive to a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def summarise(values: torch.Tensor) -> dict[str, float]:
    ci = mean_confidence_interval(values)
    return {key: round(float(value), 4) for key, value in ci.items()}


def score(model, x, target, annotation, pixel_map) -> dict[str, dict[str, float]]:
    """Localisation against the annotation and insertion/deletion over 2x2-pixel players."""
    scores = {name: summarise(v) for name, v in localization(pixel_map, annotation).items()}
    grid = PatchGrid(x.shape[-1], 2)
    players = grid.pool(pixel_map, reduce="sum")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ins = insertion_deletion(
            model, BaselineFill(grid, "blur"), x, players, target, 32, generator=generator
        )
        dele = insertion_deletion(
            model, BaselineFill(grid, "zeros"), x, players, target, 32, generator=generator
        )
    scores["insertion_auc"] = summarise(ins["insertion_auc"])
    scores["deletion_auc"] = summarise(dele["deletion_auc"])
    return scores


def save_figure(path: Path, x, annotation, maps: dict[str, torch.Tensor], rows: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {"image": None, "annotation": annotation, **maps}
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.9 * len(columns), 1.9 * rows), squeeze=False)
    for i in range(rows):
        for j, (name, values) in enumerate(columns.items()):
            ax = axes[i, j]
            if values is None:
                ax.imshow(x[i].permute(1, 2, 0).numpy())
            else:
                ax.imshow(values[i].numpy(), cmap="inferno")
            ax.axis("off")
            if i == 0:  # long method names wrap instead of running into the next column's title
                ax.set_title(textwrap.fill(name, 20), fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:  # a killed run leaves the old figure, never half of one
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100, help="test images explained and scored")
    parser.add_argument("--speed-images", type=int, default=8, help="images also run one at a time")
    parser.add_argument("--gan-epochs", type=int, default=None, help="override the config's GAN epochs")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 64])
    args = parser.parse_args()
    total_start = time.perf_counter()
    config = yaml.safe_load(CONFIG.read_text())
    explainer_cfg = copy.deepcopy(config["explainer"])
    if args.gan_epochs is not None:
        explainer_cfg["gan"]["epochs"] = args.gan_epochs

    data = ShapesDataModule(num_train=3000, num_val=100, num_test=args.num_images, batch_size=64, seed=0)
    data.setup("fit")
    model, accuracy, train_seconds = train_classifier(data, args.channels, args.train_epochs)
    print(f"classifier: test accuracy {accuracy:.3f} after {train_seconds:.0f} s")
    test = data.test_dataset
    x, target, annotation = test.inputs, test.targets, test.annotations

    explainer = InputIBA(model, **explainer_cfg)
    (stats, stat_wall, _) = timed(lambda: explainer.estimate(data.train_dataloader(), **config["statistics"]))
    iba = IBA(model, explainer_cfg["layer"], stats, batch_size=explainer.batch_size, **config["iba"])
    gradcam = GradCAM(model, PatchGrid(32, 1), layer=explainer_cfg["layer"])
    gradient = Gradient(model, PatchGrid(32, 1))
    integrated = IntegratedGradients(model, PatchGrid(32, 1), steps=32)

    runs = {
        "InputIBA": lambda: explainer.explain(x, target),
        "IBA": lambda: iba.attribute(x, target),
        "integrated_gradients": lambda: integrated.attribute_pixels(x, target),
        "GradCAM": lambda: gradcam.attribute_pixels(x, target),
        "gradient": lambda: gradient.attribute_pixels(x, target),
    }
    maps, seconds, extra = {}, {}, {}
    for name, fn in runs.items():
        result, wall, cpu = timed(fn)
        if name == "InputIBA":
            extra = {"prior": result["prior"], "feature": result["feature"]}
            result = result["input"]
        maps[name] = result.detach()
        seconds[name] = {"wall_per_image": wall / len(x), "cpu_per_image": cpu / len(x)}
        print(f"{name}: {wall / len(x):.3f} s/image")

    scores = {name: score(model, x, target, annotation, m) for name, m in maps.items()}
    scores["InputIBA prior (GAN mask)"] = score(model, x, target, annotation, extra["prior"])

    # The same InputIBA steps one image at a time (same seeds: image i keeps its random stream).
    n = min(args.speed_images, len(x))
    single = InputIBA(model, **{**explainer_cfg, "batch_size": 1}, statistics=stats)
    single_out, single_wall, single_cpu = timed(lambda: single.explain(x[:n], target[:n]))
    batched_out = {"input": maps["InputIBA"][:n], **{k: v[:n] for k, v in extra.items()}}
    diff = {k: float((single_out[k] - batched_out[k]).abs().max()) for k in ("feature", "prior", "input")}
    speed = {
        "images_one_at_a_time": n,
        "batch_size": explainer.batch_size,
        "batched_wall_per_image": seconds["InputIBA"]["wall_per_image"],
        "one_at_a_time_wall_per_image": single_wall / n,
        "batched_cpu_per_image": seconds["InputIBA"]["cpu_per_image"],
        "one_at_a_time_cpu_per_image": single_cpu / n,
        "max_abs_map_difference": diff,
    }
    speed["speedup_wall"] = speed["one_at_a_time_wall_per_image"] / speed["batched_wall_per_image"]
    speed["speedup_cpu"] = speed["one_at_a_time_cpu_per_image"] / speed["batched_cpu_per_image"]

    rows = [{"method": name, **{k: v["mean"] for k, v in s.items()}} for name, s in scores.items()]
    print_table(
        rows, ["method", "ehr_auc", "relevance_mass", "pointing_game", "insertion_auc", "deletion_auc"]
    )
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in speed.items()})
    inp, base = scores["InputIBA"], scores["IBA"]
    goals = {
        "inputiba_beats_iba_ehr": inp["ehr_auc"]["mean"] > base["ehr_auc"]["mean"],
        "inputiba_beats_iba_relevance_mass": inp["relevance_mass"]["mean"] > base["relevance_mass"]["mean"],
        "batched_at_least_4x_faster": speed["speedup_wall"] >= 4.0,
        "batched_equals_one_at_a_time": max(diff.values()) < 1e-3,
    }
    save_figure(
        RESULTS / "input_iba.png", x, annotation,
        {"IBA": maps["IBA"], "InputIBA": maps["InputIBA"], "gradient": maps["gradient"], "GradCAM": maps["GradCAM"]},
    )  # fmt: skip
    payload = {
        "description": "InputIBA vs baselines on ShapesDataModule test images (target = true label)",
        "command": command_line(),
        "num_images": len(x),
        "classifier": {"channels": args.channels, "epochs": args.train_epochs, "test_accuracy": accuracy},
        "explainer_config": explainer_cfg,
        "iba_config": config["iba"],
        "statistics": {"num_samples": stats.num_samples, "wall_seconds": stat_wall},
        "scores": scores,
        "seconds": seconds,
        "batching": speed,
        "goals": goals,
        "total_wall_seconds": time.perf_counter() - total_start,
        "environment": environment(),
    }
    print(f"wrote {write_json('input_iba', payload)}; goals: {goals}")


if __name__ == "__main__":
    main()
