"""Does WeightedSHAP recover the prediction faster than the Shapley value? (Kwon & Zou, NeurIPS 2022, Sec. 5.)

For every test input (its predicted class, probabilities) the marginal contributions by coalition size are estimated
once by antithetic permutation sampling (``--budget`` evaluations), WeightedSHAP picks among the 13 candidate
semivalues the one with the smallest prediction-recovery error (adding features by ``|φ|``, largest first,
``Σ_k |v(S_k) - v(all)|``, on the same game), and that error is compared with the Shapley value's from the same
contributions (and, on digits, with the exact Shapley value's).

- digits: 16 players (2x2 patches), the small CNN of ``benchmarks/estimators.py`` (trained with random patches
  removed, zero filling); the game tabulated on all 2^16 coalitions;
- breast cancer: 30 standardised features, an MLP trained with random features removed, removed features at the
  training mean (zero).

    python -m benchmarks.weighted_shap [--num-images 30] [--budget 2048]

Writes benchmarks/results/weighted_shap.json and prints the table. The error is the quantity WeightedSHAP
minimises, so WeightedSHAP is never worse on it by construction; the numbers say by how much, and how often another
semivalue than Shapley's is chosen.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from benchmarks.common import environment, print_table, write_json
from benchmarks.estimators import digits_split, summary, table_game, tabulate, train_model
from lit_xai.data import TabularDataModule
from lit_xai.games import ModelGame
from lit_xai.masking import BaselineFill
from lit_xai.models import MLP
from lit_xai.players import FeatureGroups, PatchGrid
from lit_xai.semivalues import permutation_sampling
from lit_xai.shapley import exact_shapley
from lit_xai.weighted_shap import SHAPLEY, recovery_error, weighted_shap


def compare(games: list, num_players: int, budget: int, exact: torch.Tensor | None = None) -> dict:
    """Recovery errors of WeightedSHAP and Shapley from the same permutations, per input (its own seed)."""
    chosen, shapley, truth, choices = [], [], [], collections.Counter()
    for b, game in enumerate(games):
        contributions = permutation_sampling(
            game, num_players, max_evaluations=budget, generator=torch.Generator().manual_seed(b)
        )
        result = weighted_shap(game, contributions)
        errors = result.errors.reshape(len(result.names))  # one input, one class
        index = int(result.choice.reshape(()))
        chosen.append(float(errors[index]))
        shapley.append(float(errors[result.names.index(SHAPLEY)]))
        choices[result.names[index]] += 1
        if exact is not None:
            error, _ = recovery_error(game, exact[b].view(1, 1, num_players, 1))
            truth.append(float(error))
    out = {
        "weighted_shap": summary(chosen),
        "shapley": summary(shapley),
        "weighted_over_shapley": sum(chosen) / sum(shapley),
        "share_not_shapley": sum(c < s for c, s in zip(chosen, shapley)) / len(chosen),
        "choices": dict(choices.most_common()),
    }
    if truth:
        out["exact_shapley"] = summary(truth)
    return out


def digits(num_images: int, budget: int) -> dict:
    grid = PatchGrid(8, 2)
    masker = BaselineFill(grid)
    data = digits_split()
    model = train_model(data, masker)
    x = data["x_test"][:num_images]
    with torch.no_grad():
        target = model(x).argmax(-1)
    table = tabulate(model, masker, x, target)
    games = [table_game(table[b]) for b in range(num_images)]
    exact = torch.stack([exact_shapley(g, grid.num_players)[:, 0] for g in games])
    return {
        "players": grid.num_players,
        "images": num_images,
        **compare(games, grid.num_players, budget, exact),
    }


def breast_cancer(num_images: int, budget: int) -> dict:
    players = FeatureGroups(30)
    masker = BaselineFill(players)  # standardised features: zero is the training mean
    data = digits_split(data=TabularDataModule("breast_cancer", seed=0))
    model = train_model(data, masker, epochs=60, model=MLP(30, 2, hidden=(64, 64)))
    x = data["x_test"][:num_images]
    with torch.no_grad():
        accuracy = float((model(data["x_test"]).argmax(-1) == data["y_test"]).float().mean())
        target = model(x).argmax(-1)
    games = [ModelGame(model, masker, x[b : b + 1], target=target[b : b + 1]) for b in range(len(x))]
    return {"players": 30, "images": len(x), "model_test_accuracy": accuracy, **compare(games, 30, budget)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=30)
    parser.add_argument("--budget", type=int, default=2048)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    payload = {
        "description": __doc__.split("\n\n")[0],
        "budget": args.budget,
        "link": "softmax, predicted class",
        "results": {},
        "environment": environment(),
    }
    for name, run in (("digits", digits), ("breast_cancer", breast_cancer)):
        payload["results"][name] = run(args.num_images, args.budget)
        payload["seconds"] = time.perf_counter() - start
        write_json("weighted_shap", payload)  # partial results survive a stopped run
        print(f"[weighted_shap] {name} done ({payload['seconds']:.0f} s)")
    payload["goals"] = {
        "weighted_at_most_shapley_on_both": {
            "goal": True,
            "measured": all(r["weighted_over_shapley"] <= 1 for r in payload["results"].values()),
        }
    }
    write_json("weighted_shap", payload)
    rows = []
    for name, r in payload["results"].items():
        rows.append(
            {
                "dataset": name,
                "WeightedSHAP": f"{r['weighted_shap']['mean']:.3f} ± {r['weighted_shap']['ci95']:.2g}",
                "Shapley": f"{r['shapley']['mean']:.3f} ± {r['shapley']['ci95']:.2g}",
                "exact Shapley": f"{r['exact_shapley']['mean']:.3f}" if "exact_shapley" in r else "",
                "ratio": f"{r['weighted_over_shapley']:.3f}",
                "not Shapley": f"{r['share_not_shapley']:.0%}",
                "most chosen": ", ".join(f"{k} {v}" for k, v in list(r["choices"].items())[:3]),
            }
        )
    print_table(
        rows, ["dataset", "WeightedSHAP", "Shapley", "exact Shapley", "ratio", "not Shapley", "most chosen"]
    )
    return payload


if __name__ == "__main__":
    main()
