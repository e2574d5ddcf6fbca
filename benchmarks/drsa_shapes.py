"""Do DRSA's sub-maps separate two informative shapes? (issue 17's second benchmark)

Chormai et al. (TPAMI 2024) claim that DRSA splits an explanation into sub-maps that each show one concept the
model uses. Here the concepts are known: every 32x32 image shows a square, a circle, a triangle and a cross in
distinct cells of a 3x3 grid, and the label is 1 exactly when the square *and* the circle are red (the triangle and
the cross are red at random in both classes, so redness alone does not decide; negatives have at most one of the
two red). On a correctly classified positive, both shapes carry the decision.

A SmallCNN is trained; DRSA and PRCA are fitted at ``features`` (64 channels) on the training positives (class 1,
contexts = gradients of the class-1 logit), with ``K = 2`` subspaces of 32 dimensions (they span the layer, so no
residual); the sub-maps of test positives are scored by the share of each sub-map's positive relevance that falls
on its best shape (square or circle), against the plain gradient x input map's share on its best shape. Measured
on the pixel maps and on the layer's 8x8 grid (shape masks averaged to the grid).

``python -m benchmarks.drsa_shapes`` writes ``benchmarks/results/drsa_shapes.json`` and ``drsa_shapes.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, command_line, environment, write_json  # noqa: E402
from lit_xai.algorithms.relevant_subspaces import RelevantSubspaces, collect_pairs, drsa, prca  # noqa: E402
from lit_xai.data.shapes import DISTRACTOR_COLOURS, TARGET_COLOUR, _shape_mask  # noqa: E402
from lit_xai.io import atomic_open  # noqa: E402
from lit_xai.models import SmallCNN  # noqa: E402
from lit_xai.players import PatchGrid  # noqa: E402

KINDS = ("square", "circle", "triangle", "cross")


def two_shape_images(
    n: int, seed: int, blue_circle: bool = False, size: int = 32, grid: int = 3, min_size: int = 7
):
    """``(images (n, 3, S, S), labels (n,), masks (n, 2, S, S))``: masks of the square and the circle.

    With ``blue_circle`` the circle's deciding colour is blue instead of red (and blue leaves the distractors'
    palette for white), so the two deciding shapes differ in colour as well as in form.
    """
    gen = torch.Generator().manual_seed(seed)
    cell = size // grid
    margin = (size - grid * cell) // 2
    labels = (torch.arange(n) % 2)[torch.randperm(n, generator=gen)]
    # Which of square / circle are red: both for positives; one or neither (equally often) for negatives.
    negative_cases = torch.tensor([[True, False], [False, True], [False, False]])
    red = negative_cases[torch.randint(0, 3, (n,), generator=gen)]
    red[labels == 1] = True
    red = torch.cat([red, torch.rand(n, 2, generator=gen) < 0.5], dim=1)  # triangle, cross: red at random
    cells = torch.rand(n, grid * grid, generator=gen).argsort(dim=1)[:, :4]
    sizes = torch.randint(min_size, cell + 1, (n, 4), generator=gen).float()
    cy = (
        margin
        + (cells // grid) * cell
        + (torch.rand(n, 4, generator=gen) * (cell - sizes + 1)).floor()
        + sizes / 2
    )
    cx = (
        margin
        + (cells % grid) * cell
        + (torch.rand(n, 4, generator=gen) * (cell - sizes + 1)).floor()
        + sizes / 2
    )
    # Distractors: green, blue, yellow, cyan (no red channel alone decides); white replaces blue for a blue circle.
    palette = torch.tensor(DISTRACTOR_COLOURS[:4])
    deciding = torch.tensor(TARGET_COLOUR).expand(4, 3).clone()
    if blue_circle:
        palette[1] = torch.tensor(DISTRACTOR_COLOURS[5])
        deciding[1] = torch.tensor(DISTRACTOR_COLOURS[1])
    colours = palette[torch.randint(0, len(palette), (n, 4), generator=gen)]
    colours = torch.where(red.unsqueeze(-1), deciding, colours)
    colours = (colours + 0.16 * (torch.rand(n, 4, 3, generator=gen) - 0.5)).clamp(0, 1)
    pix = torch.arange(size, dtype=torch.float32) + 0.5
    slot = torch.zeros(n, size, size, dtype=torch.long)
    for k, kind in enumerate(KINDS):
        half = (sizes[:, k] / 2).view(n, 1, 1)
        v = (pix.view(1, -1, 1) - cy[:, k].view(n, 1, 1)) / half
        u = (pix.view(1, 1, -1) - cx[:, k].view(n, 1, 1)) / half
        slot.masked_fill_(_shape_mask(kind, u, v), k + 1)
    table = torch.cat([0.3 * torch.rand(n, 1, 3, generator=gen), colours], dim=1)
    images = table[torch.arange(n).view(n, 1, 1), slot].permute(0, 3, 1, 2).contiguous()
    images = (images + 0.05 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    masks = torch.stack([(slot == 1), (slot == 2)], dim=1).float()
    return images, labels, masks


def train(x, y, channels, epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    model = SmallCNN(3, 2, channels=channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def shape_shares(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive relevance on each shape: maps ``(B, M, h, w)``, masks ``(B, 2, h, w)`` in
    [0, 1] -> ``(B, M, 2)``."""
    positive = maps.clamp_min(0)
    total = positive.flatten(2).sum(-1).clamp_min(1e-12)  # (B, M)
    on_shape = torch.einsum("bmhw,bshw->bms", positive, masks)
    return on_shape / total.unsqueeze(-1)


def summary(shares: torch.Tensor) -> dict:
    """Per sub-map: mean share on its best shape (per image), which shape is best how often, the goal."""
    best = shares.max(-1)
    out = {}
    for k in range(shares.shape[1]):
        out[f"map_{k}"] = {
            "best_shape_share_mean": round(float(best.values[:, k].mean()), 4),
            "fraction_of_images_best_is_square": round(float((best.indices[:, k] == 0).float().mean()), 4),
            "share_on_square_mean": round(float(shares[:, k, 0].mean()), 4),
            "share_on_circle_mean": round(float(shares[:, k, 1].mean()), 4),
        }
    return out


def save_figure(path: Path, x, masks, maps: dict[str, torch.Tensor], rows: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["image", "square + circle"] + [
        f"{name} {k}" for name, m in maps.items() for k in range(m.shape[1])
    ]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.7 * len(columns), 1.7 * rows), squeeze=False)
    for i in range(rows):
        panels = [x[i].permute(1, 2, 0), masks[i, 0] + 2 * masks[i, 1]]
        panels += [m[i, k] for m in maps.values() for k in range(m.shape[1])]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j < 2:
                ax.imshow(panel.numpy())
            else:
                bound = float(panel.abs().max()) or 1.0
                ax.imshow(panel.numpy(), cmap="bwr", vmin=-bound, vmax=bound)
            ax.axis("off")
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--train-epochs", type=int, default=6)
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 64])
    parser.add_argument("--drsa-steps", type=int, default=500)
    parser.add_argument("--drsa-lr", type=float, default=1.0)
    parser.add_argument(
        "--subspace-size", type=int, default=None, help="d' (default: channels / 2, no residual)"
    )
    parser.add_argument("--blue-circle", action="store_true", help="the circle decides when blue, not red")
    parser.add_argument(
        "--max-pairs", type=int, default=50_000, help="(activation, context) pairs for the fits"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    x, y, _ = two_shape_images(args.num_train, seed=0, blue_circle=args.blue_circle)
    test_x, test_y, test_masks = two_shape_images(args.num_test, seed=1, blue_circle=args.blue_circle)
    model = train(x, y, args.channels, args.train_epochs)
    with torch.no_grad():
        predicted = model(test_x).argmax(-1)
    accuracy = float((predicted == test_y).float().mean())
    print(f"classifier: test accuracy {accuracy:.3f}", flush=True)
    chosen = (test_y == 1) & (predicted == 1)  # correctly classified positives: both shapes decide
    ex, masks = test_x[chosen], test_masks[chosen]

    layer, channels = "features", args.channels[-1]
    size = args.subspace_size or channels // 2
    batches = [{"input": x[i : i + 256], "target": y[i : i + 256]} for i in range(0, len(x), 256)]
    pairs = collect_pairs(model, layer, batches, target=1, max_pairs=args.max_pairs)
    print(f"pairs: {len(pairs.activations)} from {pairs.num_images} positive training images", flush=True)
    fit = drsa(pairs, 2, size, steps=args.drsa_steps, trials=3, lr=args.drsa_lr, seed=0)
    bases = {"DRSA": fit.basis, "PRCA": prca(pairs, num_subspaces=2, subspace_size=size)}
    players = PatchGrid(32, 1)
    results, figure_maps = {}, {}
    for name, basis in bases.items():
        explainer = RelevantSubspaces(model, players, layer, basis)
        pixels = explainer.attribute_pixels(ex, 1)  # (B, 3, H, W): two sub-maps and the residual
        grid = explainer.attribute_grid(ex, 1)
        grid_masks = F.adaptive_avg_pool2d(masks, grid.shape[-2:])
        results[name] = {
            "pixels": summary(shape_shares(pixels[:, :2], masks)),
            "grid": summary(shape_shares(grid[:, :2], grid_masks)),
            "residual_max_abs": float(grid[:, 2].abs().max()),
            "plain_pixels": summary(shape_shares(pixels.sum(1, keepdim=True), masks)),
            "plain_grid": summary(shape_shares(grid.sum(1, keepdim=True), grid_masks)),
        }
        figure_maps[name] = pixels[:, :2]
        print(name, results[name], flush=True)
    figure_maps["plain"] = figure_maps["DRSA"].sum(1, keepdim=True)
    goals = {
        name: {
            level: all(r[level][f"map_{k}"]["best_shape_share_mean"] >= 0.6 for k in range(2))
            for level in ("pixels", "grid")
        }
        for name, r in results.items()
    }
    name = (
        "drsa_shapes" + ("" if size == channels // 2 else f"_d{size}") + ("_blue" if args.blue_circle else "")
    )
    save_figure(
        RESULTS / f"{name}.png",
        ex,
        masks,
        figure_maps,
    )
    payload = {
        "description": "DRSA / PRCA sub-maps (K=2) on correctly classified positives of two-shape images",
        "command": command_line(),
        "classifier": {"channels": args.channels, "epochs": args.train_epochs, "test_accuracy": accuracy},
        "num_explained": int(chosen.sum()),
        "pairs": {"count": len(pairs.activations), "images": pairs.num_images},
        "drsa": {
            "subspace_size": size,
            "steps": args.drsa_steps,
            "lr": args.drsa_lr,
            "trials": 3,
            "objective": fit.objective,
            "objective_by_trial_start_end": [[t[0], t[-1]] for t in fit.trials],
        },
        "results": results,
        "goals_each_sub_map_at_least_60pct_on_one_shape": goals,
        "total_wall_seconds": time.perf_counter() - start,
        "environment": environment(),
    }
    print(f"wrote {write_json(name, payload)}; goals: {goals}")


if __name__ == "__main__":
    main()
