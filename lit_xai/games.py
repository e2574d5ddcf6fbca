"""Coalitional games: what the Shapley estimators of :mod:`lit_xai.shapley` take as input.

A *game* is any callable that maps a keep-mask ``(N, d)`` (bool, ``True`` = player present) to values ``(N, C)``
for one input, or ``(B, N, C)`` for ``B`` inputs evaluated on the same ``N`` coalitions. :class:`ModelGame` is
the game of a model explained by removing players (Covert, Lundberg & Lee, "Explaining by Removing", JMLR 2021):
a masker removes the players outside the coalition and a link turns the logits into the values that are shared
out.

The helpers below are what every estimator (:mod:`lit_xai.shapley`, :mod:`lit_xai.kernel_shap`,
:mod:`lit_xai.semivalues`, :mod:`lit_xai.weighted_shap`, h-Shap) needs to call a game safely: check the number of
players, call the game and check its answer's shape, enumerate coalitions in binary, restrict a plain callable to
some of its inputs.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.links import get_link
from lit_xai.masking import Masker
from lit_xai.players import check_keep

__all__ = [
    "Game",
    "ModelGame",
    "check_num_players",
    "enumerate_coalitions",
    "evaluate_game",
    "restrict_inputs",
    "result_dtype",
]

Game = Callable[[Tensor], Tensor]


class ModelGame:
    """The game of a model on a batch of inputs: ``v_b(S) = link(model(x_b with only S kept))``.

    Calling it with a keep-mask ``(N, d)`` evaluates every input on every coalition and returns ``(B, N, C)``,
    in chunks of ``batch_size`` rows under ``torch.no_grad()``. The model's train/eval mode is left alone: put it
    in eval mode first, or dropout makes the game random.

    Args:
        model: the network; called through ``masker``.
        masker: how missing players are removed (``masker(model, x, keep) -> logits``).
        x: inputs ``(B, ...)`` matching ``masker.players``.
        link: ``"softmax"``, ``"log_softmax"``, ``"logits"``, ``"sigmoid"`` or a callable applied to the logits.
        batch_size: rows (input, coalition pairs) per forward pass.
        target: optional class index (int) or one per input ``(B,)``: values are then ``(B, N, 1)`` for that class.
    """

    def __init__(
        self,
        model: nn.Module,
        masker: Masker,
        x: Tensor,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 512,
        target: int | Tensor | None = None,
    ) -> None:
        masker.players.check_input(x)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.masker, self.x = model, masker, x
        self.link = get_link(link)
        self.batch_size = int(batch_size)
        if target is not None:
            target = torch.as_tensor(target, dtype=torch.long, device=x.device)
            if target.dim() > 1 or target.numel() not in (1, x.shape[0]):
                raise ValueError(
                    f"target must be a class index or one per input ({x.shape[0]},), got {tuple(target.shape)}"
                )
            target = target.reshape(-1).expand(x.shape[0])
        self.target = target
        if model.training:
            warnings.warn(
                "ModelGame got a model in training mode: dropout or batch norm make the game random; call model.eval()",
                stacklevel=2,
            )

    @property
    def num_players(self) -> int:
        return self.masker.num_players

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __call__(self, keep: Tensor) -> Tensor:
        keep = check_keep(keep, self.num_players).to(self.x.device)
        num_inputs, num_coalitions = self.x.shape[0], keep.shape[0]
        outputs = []
        with torch.no_grad():
            # Row r pairs input r // N with coalition r % N, so chunks mix inputs and coalitions freely.
            for start in range(0, num_inputs * num_coalitions, self.batch_size):
                rows = torch.arange(
                    start, min(start + self.batch_size, num_inputs * num_coalitions), device=keep.device
                )
                inputs = rows // num_coalitions
                out = self.link(self.masker(self.model, self.x[inputs], keep[rows % num_coalitions]))
                if self.target is not None:
                    out = out.gather(-1, self.target[inputs].unsqueeze(-1))
                outputs.append(out)
        return torch.cat(outputs).reshape(num_inputs, num_coalitions, -1)

    def subset(self, rows: Tensor) -> ModelGame:
        """The same game on some of the inputs (``rows`` index ``x``); estimators use it to stop evaluating inputs
        whose estimates have converged."""
        game = copy.copy(self)
        game.x = self.x[rows]
        game.target = None if self.target is None else self.target[rows]
        return game

    def null(self) -> Tensor:
        """``v(∅)`` per input, ``(B, C)``."""
        return self(torch.zeros(1, self.num_players, dtype=torch.bool))[:, 0]

    def grand(self) -> Tensor:
        """``v(all players)`` per input, ``(B, C)``."""
        return self(torch.ones(1, self.num_players, dtype=torch.bool))[:, 0]


def check_num_players(num_players: int) -> int:
    """``num_players`` as an int; a clear error unless it is a positive integer."""
    if int(num_players) != num_players or num_players < 1:
        raise ValueError(f"num_players must be a positive integer, got {num_players!r}")
    return int(num_players)


def evaluate_game(game: Game, keep: Tensor, first: Tensor | None = None) -> tuple[Tensor, bool]:
    """Call ``game`` and return its values as ``(B, N, C)`` plus whether it returned ``(N, C)``.

    ``first`` is the (B, N, C) result of an earlier call: later calls must agree with it on ``B`` and ``C``.
    """
    values = game(keep)
    if not isinstance(values, Tensor):
        raise ValueError(f"the game must return a torch.Tensor, got {type(values).__name__}")
    single = values.dim() == 2
    if single:
        values = values.unsqueeze(0)
    if values.dim() != 3 or values.shape[1] != keep.shape[0]:
        raise ValueError(
            f"the game must return values of shape (N, C) or (B, N, C) for a keep-mask of N={keep.shape[0]} rows, "
            f"got {tuple(values.shape)}; a game with one output per coalition should return values.unsqueeze(-1)"
        )
    if first is not None and (values.shape[0], values.shape[2]) != (first.shape[0], first.shape[2]):
        raise ValueError(
            f"the game returned (B, C) = {(values.shape[0], values.shape[2])} after returning "
            f"{(first.shape[0], first.shape[2])} on an earlier call; a game must keep its inputs and outputs fixed"
        )
    if not torch.isfinite(values).all():
        raise ValueError(
            "the game returned NaN or infinite values; check the model (e.g. half precision overflow) and the link"
        )
    return values, single


def result_dtype(values: Tensor) -> torch.dtype:
    """The dtype results are returned in: the game's own floating dtype, else torch's default."""
    return values.dtype if values.is_floating_point() else torch.get_default_dtype()


def enumerate_coalitions(start: int, stop: int, num_players: int, device: torch.device | None) -> Tensor:
    """Coalitions ``start .. stop-1`` in binary: bit ``i`` of the code says whether player ``i`` is kept."""
    codes = torch.arange(start, stop, device=device)
    bits = torch.arange(num_players, device=device)
    return ((codes.unsqueeze(1) >> bits) & 1).bool()


def restrict_inputs(game: Game, rows: Tensor) -> Game:
    """The game restricted to some of its inputs, for games that cannot be restricted themselves."""

    def restricted(keep: Tensor) -> Tensor:
        values = game(keep)
        return values[rows.to(values.device)] if values.dim() == 3 else values

    return restricted
