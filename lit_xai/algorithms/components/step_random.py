"""Random draws of a training step that a resumed run draws again: generators keyed by (seed, stream, rank, step).

Lightning does not put the global random generators in checkpoints, so draws taken from them (masks, random fills,
Gumbel noise) differ after ``--ckpt_path last`` and a killed run no longer ends with the weights of an
uninterrupted one. Drawing from :func:`step_generator` instead makes each step's draws a function of the run's seed
(``seed_everything``), the kind of draw (``stream``), the process and the global step only.
"""

from __future__ import annotations

import os

import lightning as L
import torch

from lit_xai.sampling import keyed_seed

__all__ = ["batch_generator", "step_generator", "step_seed"]

#: Added to the stream of evaluation draws, so they never share a seed with training draws.
_EVALUATION = 1_000


def step_seed(module: L.LightningModule, stream: int) -> int:
    """The seed of ``module``'s current training step for one kind of draw (``stream``)."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # the run's seed_everything seed (train.py sets one)
    return keyed_seed(seed, stream, module.global_rank, module.global_step)


def step_generator(module: L.LightningModule, stream: int) -> torch.Generator:
    """A CPU generator seeded by :func:`step_seed` (CPU: the same numbers on any device)."""
    return torch.Generator().manual_seed(step_seed(module, stream))


def batch_generator(module: L.LightningModule, stream: int, batch_idx: int) -> torch.Generator:
    """A CPU generator for evaluation batch ``batch_idx``: the same draws every epoch (validation losses compare
    across epochs) and after a resume."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return torch.Generator().manual_seed(
        keyed_seed(seed, _EVALUATION + stream, module.global_rank, batch_idx)
    )
