"""Token dropping vs attention masking on a ViT-S/16 at 224x224 (random weights), Shapley-kernel keep-masks.

Both maskers give the same logits (tests/test_masking.py); token dropping should cost less because attention and
MLPs only run on the kept tokens. The goal is a time ratio of at most 0.6.

    python -m benchmarks.masking_speed [--batch-size 64] [--repeats 5] [--device cpu]

Writes benchmarks/results/masking_speed.json and prints a table. The ratio is measured within one run, with the
two maskers interleaved, because this machine is shared and absolute times are noisy.
"""

from __future__ import annotations

import argparse
import statistics

import timm
import torch

from benchmarks.common import environment, interleaved_times, print_table, write_json
from lit_xai.masking import AttentionMask, TokenDrop
from lit_xai.players import PatchGrid
from lit_xai.sampling import ShapleySampler


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval().to(args.device)
    grid = PatchGrid(model.patch_embed.img_size, model.patch_embed.patch_size)
    x = torch.randn(args.batch_size, 3, *grid.image_size, device=args.device)
    keep = ShapleySampler(grid.num_players).sample(
        args.batch_size, generator=torch.Generator().manual_seed(0)
    )
    keep = keep.to(args.device)
    maskers = {"token_drop": TokenDrop(grid), "attention_mask": AttentionMask(grid)}

    with torch.inference_mode():
        for masker in maskers.values():  # warm-up
            masker(model, x, keep)
        times = interleaved_times(
            {name: (lambda m=m: m(model, x, keep)) for name, m in maskers.items()}, args.repeats
        )

    medians = {name: statistics.median(t) for name, t in times.items()}
    ratio = medians["token_drop"] / medians["attention_mask"]
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "num_players": grid.num_players,
        "mean_kept_fraction": keep.float().mean().item(),
        "seconds": times,
        "median_seconds": medians,
        "ratio_token_drop_over_attention_mask": ratio,
        "goal": "ratio <= 0.6",
        "goal_met": ratio <= 0.6,
        "environment": environment(),
    }
    path = write_json("masking_speed", result)
    print_table(
        [
            {
                "masker": name,
                "median s/batch": medians[name],
                "ms/image": 1000 * medians[name] / args.batch_size,
            }
            for name in maskers
        ],
        ["masker", "median s/batch", "ms/image"],
    )
    print(f"token_drop / attention_mask = {ratio:.3f} (goal <= 0.6) -> {path}")


if __name__ == "__main__":
    main()
