"""DIME with tied hidden layers: one hidden pass per subset for both heads vs the two separate passes before.

The authors tie the predictor's and the value network's hidden layers on MNIST (Gadgil, Covert & Lee, ICLR 2024);
on the same masked input both networks then compute the same hidden representation, and
:class:`~lit_xai.algorithms.dynamic_selection.CMISelector` computes it once (tests/test_dime.py checks that the
losses, gradients and choices equal those of two passes). This times one training step (``training_losses`` +
backward + Adam) and one ``select`` at MNIST's size (784 pixels, MLPs 2x512, 50 acquisitions, batch 128), tied
vs untied copies of the same weights (which take the two-pass path), interleaved in one run.

    python -m benchmarks.dime_shared_pass [--batch-size 128] [--steps 50] [--repeats 5]

Writes benchmarks/results/dime_shared_pass.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from benchmarks.common import command_line, environment, interleaved_times, print_table, write_json
from lit_xai.algorithms.dynamic_selection import CMISelector, build_network, tie_hidden_layers
from lit_xai.players import PatchGrid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="acquisitions per sample (max_features)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    players = PatchGrid(28, 1)
    kwargs = {"hidden": [512, 512], "dropout": 0.3}
    predictor = build_network("mlp", players, 10, kwargs=kwargs)
    value_network = build_network("mlp", players, players.num_players, kwargs=kwargs)
    tie_hidden_layers(predictor, value_network)
    selectors = {
        "one_pass": CMISelector(predictor, value_network, players),
        # Separate deep copies break the tie: the same weights, run as two networks.
        "two_passes": CMISelector(copy.deepcopy(predictor), copy.deepcopy(value_network), players),
    }
    optimizers = {name: torch.optim.Adam(s.parameters(), lr=1e-3) for name, s in selectors.items()}
    x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))

    def train_step(name: str) -> None:
        selector, optimizer = selectors[name].train(), optimizers[name]
        optimizer.zero_grad()
        predictor_loss, value_loss = selector.training_losses(x, y, args.steps, epsilon=0.05)
        (predictor_loss + value_loss).backward()
        optimizer.step()

    def select(name: str) -> None:
        with torch.no_grad():
            selectors[name].eval().select(x, budget=args.steps)

    rows, result = [], {"command": command_line(), "batch_size": args.batch_size, "steps": args.steps}
    for task, fn in (("train_step", train_step), ("select", select)):
        for name in selectors:  # warm-up
            fn(name)
        times = interleaved_times({n: (lambda n=n, f=fn: f(n)) for n in selectors}, args.repeats)
        medians = {name: statistics.median(t) for name, t in times.items()}
        speedup = medians["two_passes"] / medians["one_pass"]
        result[task] = {"seconds": times, "median_seconds": medians, "speedup": speedup}
        rows.append(
            {"task": task, **{f"{n} s": f"{m:.3f}" for n, m in medians.items()}, "speedup": f"{speedup:.2f}x"}
        )
    result["environment"] = environment()
    print_table(rows, list(rows[0]))
    print(f"wrote {write_json('dime_shared_pass', result)}")


if __name__ == "__main__":
    main()
