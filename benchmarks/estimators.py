"""Which black-box estimator at which budget? (Chen, Covert, Lundberg & Lee, Nature MI 2023, asked it for Shapley.)

Digits, 16 players (2x2 patches of the 8x8 images): a small CNN trained with patches removed at random (zero
filling, the surrogate recipe), explained for its predicted class on held-out images, probabilities. Each image's
game is tabulated on all 2^16 coalitions once, which gives the exact Shapley and Banzhaf values, and the estimators
then read the table: at every budget (64 ... 8192 evaluations per image, the empty and full coalition included)

- KernelSHAP (paired, Shapley kernel with replacement; Covert & Lee 2021),
- Leverage SHAP (Musco & Witter, ICLR 2025: sizes uniform, paired, without replacement),
- permutation sampling with antithetic pairs (Shapley values as mean marginal contributions),

are scored against the exact Shapley values, and Banzhaf by maximum sample reuse (Bernoulli(1/2) coalitions, RISE's
masks) against the exact Banzhaf values: squared error summed over players, and Pearson correlation over the players
of one image, mean ± 95 % interval over images (each image its own random seed; repeats averaged per image first).
A regression whose coalitions do not yet identify every player (KernelSHAP at the smallest budgets) fails; failed
runs are counted ("failed") and left out of the means.

    python -m benchmarks.estimators [--num-images 30] [--repeats 3] [--budgets 64 128 ... 8192]

Writes benchmarks/results/estimators.json (after every estimator, so a stopped run keeps what it measured) and
benchmarks/results/estimators.png, and prints the table.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, environment, print_table, write_json
from lit_xai.data import DigitsDataModule
from lit_xai.games import enumerate_coalitions
from lit_xai.masking import BaselineFill
from lit_xai.models import SmallCNN
from lit_xai.players import PatchGrid
from lit_xai.sampling import UniformSizeSampler
from lit_xai.semivalues import banzhaf_msr, banzhaf_size_weights, exact_semivalue, permutation_sampling
from lit_xai.shapley import exact_shapley, kernel_shap
from lit_xai.viz import curves, save_figure

BUDGETS = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
ESTIMATORS = ("kernel_shap", "leverage_shap", "permutation", "banzhaf_msr")
GOALS = {"leverage_error_at_most_kernel_at_every_budget": True}


def digits_split(seed: int = 0, data=None) -> dict[str, torch.Tensor]:
    """Train and test tensors of a split data module (digits unless ``data`` is given)."""
    data = DigitsDataModule(seed=seed) if data is None else data
    data.setup("fit")
    data.setup("test")
    out = {}
    for split, dataset in (("train", data.train_dataset), ("test", data.test_dataset)):
        out[f"x_{split}"] = torch.stack([dataset[i]["input"] for i in range(len(dataset))])
        out[f"y_{split}"] = torch.stack([dataset[i]["target"] for i in range(len(dataset))])
    return out


def train_model(
    data: dict[str, torch.Tensor],
    masker: BaselineFill,
    epochs: int = 30,
    model: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """A model (default: a small CNN for digits) trained with a uniform-size random subset of players kept (through
    ``masker``), so that the inputs the game shows it, with players missing, are ones it was trained on."""
    torch.manual_seed(0)
    model = SmallCNN(1, 10, channels=(16, 32)) if model is None else model
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    sampler = UniformSizeSampler(masker.num_players)
    generator = torch.Generator().manual_seed(0)
    x, y = data["x_train"], data["y_train"]
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            rows = order[start : start + 64]
            keep = sampler.sample(len(rows), generator=generator)
            keep[: len(rows) // 4] = True  # a quarter of each batch complete, for accuracy on whole images
            loss = F.cross_entropy(masker(model, x[rows], keep), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def tabulate(
    model: torch.nn.Module, masker: BaselineFill, x: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``v(S)`` (softmax probability of the target) of every image on all ``2^d`` coalitions, ``(B, 2^d, 1)``."""
    d = masker.num_players
    table = torch.empty(x.shape[0], 2**d, 1, dtype=torch.float64)
    with torch.no_grad():
        for b in range(x.shape[0]):
            for start in range(0, 2**d, 8192):
                keep = enumerate_coalitions(start, min(start + 8192, 2**d), d, None)
                probs = masker(model, x[b : b + 1].expand(keep.shape[0], -1, -1, -1), keep).softmax(-1)
                table[b, start : start + keep.shape[0], 0] = probs[:, target[b]].double()
    return table


def table_game(table: torch.Tensor):
    """The game of one tabulated image: ``(N, d)`` keep-masks -> ``(N, 1)``; bit ``i`` of the row is player ``i``."""
    d = int(math.log2(table.shape[0]))
    bits = 1 << torch.arange(d)
    return lambda keep: table[(keep.long() * bits).sum(1)]


def estimate(name: str, game, d: int, budget: int, seed: int) -> torch.Tensor | None:
    """One estimator's values ``(d,)`` at ``budget`` evaluations (at most; every method spends all it can), or
    ``None`` where a regression's coalitions do not identify every player at this budget."""
    generator = torch.Generator().manual_seed(seed)
    if name in ("kernel_shap", "leverage_shap"):
        try:
            result = kernel_shap(
                game,
                d,
                threshold=None,
                max_evaluations=budget,
                batch_size=min(512, budget - 2),
                sampler="leverage" if name == "leverage_shap" else "kernel",
                generator=generator,
            )
        except ValueError as err:
            if "could not identify" not in str(err):
                raise
            return None
        return result.values[:, 0]
    if name == "permutation":
        return permutation_sampling(game, d, max_evaluations=budget, generator=generator).shapley()[:, 0]
    if name == "banzhaf_msr":
        return banzhaf_msr(game, d, budget, generator=generator)[:, 0]
    raise ValueError(name)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def summary(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    half = 1.96 * float(t.std()) / math.sqrt(len(t)) if len(t) > 1 else float("nan")
    return {"mean": float(t.mean()), "ci95": half}


def run(num_images: int, repeats: int, budgets: list[int]) -> dict:
    grid = PatchGrid(8, 2)
    masker = BaselineFill(grid)
    d = grid.num_players
    data = digits_split()
    start = time.perf_counter()
    model = train_model(data, masker)
    with torch.no_grad():
        accuracy = float((model(data["x_test"]).argmax(-1) == data["y_test"]).float().mean())
    x = data["x_test"][:num_images]
    with torch.no_grad():
        target = model(x).argmax(-1)
    table = tabulate(model, masker, x, target)
    games = [table_game(table[b]) for b in range(num_images)]
    truth = {
        "shapley": torch.stack([exact_shapley(g, d)[:, 0] for g in games]),
        "banzhaf": torch.stack([exact_semivalue(g, d, banzhaf_size_weights(d))[:, 0] for g in games]),
    }
    setup_seconds = time.perf_counter() - start
    print(
        f"[estimators] CNN test accuracy {accuracy:.3f}; {num_images} images tabulated in {setup_seconds:.0f} s"
    )
    payload = {
        "description": __doc__.split("\n\n")[0],
        "dataset": "digits",
        "players": d,
        "images": num_images,
        "repeats": repeats,
        "model": "SmallCNN(1, 10, channels=(16, 32)) trained with random patches kept, zero filling",
        "model_test_accuracy": accuracy,
        "link": "softmax, predicted class",
        "budgets": budgets,
        "results": {},
        "environment": environment(),
    }
    for name in ESTIMATORS:
        reference = truth["banzhaf" if name == "banzhaf_msr" else "shapley"]
        per_budget = {}
        for budget in budgets:
            errors, correlations, failed = [], [], 0
            for b, game in enumerate(games):
                runs = [estimate(name, game, d, budget, seed=1000 * b + r) for r in range(repeats)]
                failed += sum(v is None for v in runs)
                runs = [v for v in runs if v is not None]
                if runs:  # an image whose every run failed is left out of this budget's mean
                    errors.append(sum(float((v - reference[b]).pow(2).sum()) for v in runs) / len(runs))
                    correlations.append(sum(pearson(v, reference[b]) for v in runs) / len(runs))
            per_budget[str(budget)] = {
                "squared_error": summary(errors),
                "pearson": summary(correlations),
                "unidentified_runs": failed,
                "runs": num_images * repeats,
            }
        payload["results"][name] = per_budget
        payload["seconds"] = time.perf_counter() - start
        write_json("estimators", payload)  # partial results survive a stopped run
        print(f"[estimators] {name} done ({payload['seconds']:.0f} s)")
    kernel, leverage = payload["results"]["kernel_shap"], payload["results"]["leverage_shap"]
    payload["leverage_over_kernel_error"] = {
        b: leverage[b]["squared_error"]["mean"] / kernel[b]["squared_error"]["mean"] for b in kernel
    }
    payload["goals"] = {
        "leverage_error_at_most_kernel_at_every_budget": {
            "goal": True,
            "measured": all(ratio <= 1 for ratio in payload["leverage_over_kernel_error"].values()),
        }
    }
    write_json("estimators", payload)
    return payload


def report(payload: dict) -> None:
    rows = []
    for name, per_budget in payload["results"].items():
        for budget, scores in per_budget.items():
            rows.append(
                {
                    "estimator": name,
                    "evaluations": int(budget),
                    "squared error": f"{scores['squared_error']['mean']:.3g} ± {scores['squared_error']['ci95']:.2g}",
                    "Pearson": f"{scores['pearson']['mean']:.4f} ± {scores['pearson']['ci95']:.2g}",
                    "failed": f"{scores['unidentified_runs']}/{scores['runs']}",
                }
            )
    print_table(rows, ["estimator", "evaluations", "squared error", "Pearson", "failed"])
    print("Leverage SHAP / KernelSHAP squared error:")
    print("  ".join(f"{b}: {r:.2f}" for b, r in payload["leverage_over_kernel_error"].items()))
    budgets = payload["budgets"]
    fig = curves(
        {
            name: [math.log10(per_budget[str(b)]["squared_error"]["mean"]) for b in budgets]
            for name, per_budget in payload["results"].items()
        },
        x=budgets,
        xlabel="evaluations per image",
        ylabel="log10 squared error (Banzhaf MSR: vs exact Banzhaf)",
        logx=True,
        title=f"digits, 16 players, {payload['images']} images x {payload['repeats']} repeats",
    )
    save_figure(fig, RESULTS / "estimators.png")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    payload = run(args.num_images, args.repeats, sorted(args.budgets))
    report(payload)
    return payload


if __name__ == "__main__":
    main()
