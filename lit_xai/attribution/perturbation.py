"""Perturbation attributions: leave-one-out and RISE, through a masker.

Both remove players with a masker (:mod:`lit_xai.masking`), so "missing" means the same thing here as in every
other method of the toolkit (Covert, Lundberg & Lee, "Explaining by Removing", JMLR 2021):

- Leave-one-out (Zeiler & Fergus 2014; Zintgraf et al. 2017): ``v(all) - v(all without player i)``, ``d + 1``
  evaluations per input.
- RISE (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018):
  random player-level masks keeping each player with probability ``p``; a player's importance is the mean output
  over the masks that kept it, ``E[v(S) | i in S]``. The paper's upsampling and shifting of masks is not needed
  because masks are drawn on the players themselves.

Values are measured on the scale of ``link`` (``"softmax"`` probabilities by default, as in RISE and ViT Shapley;
``"logits"`` for additive answers). Every output class comes from the same evaluations, so :meth:`attribute_all`
returns ``(B, d, C)``; :meth:`attribute` returns ``(B, d)`` for the target (``None``: the class predicted for the
full input through the masker). The results carry no gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import Attribution, preserved_model_state, resolve_target, select_target
from lit_xai.links import get_link
from lit_xai.players import Players

__all__ = ["PerturbationAttribution", "LeaveOneOut", "RISE", "check_masker"]


def check_masker(masker: Callable | None, players: Players, method: str) -> Callable:
    """Raise a clear error unless ``masker`` is a masker for ``players``."""
    if masker is None:
        raise ValueError(
            f"{method} removes players through a masker: pass masker=BaselineFill(players) (any model), "
            f"TokenDrop(players) (timm ViTs) or build_masker(...) from lit_xai.masking"
        )
    if not callable(masker):
        raise ValueError(f"masker must be callable as masker(model, x, keep), got {type(masker).__name__}")
    masker_players = getattr(masker, "players", None)
    if masker_players is not None and masker_players.num_players != players.num_players:
        raise ValueError(
            f"the masker has {masker_players.num_players} players but the explainer has {players.num_players}; "
            f"build both from the same players"
        )
    return masker


class PerturbationAttribution(Attribution):
    """Base class: evaluate the model on many coalitions per input, batched through the masker.

    Args:
        model: the network to explain.
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        link: scale of the values: ``"softmax"`` (default), ``"logits"``, ``"log_softmax"``, ``"sigmoid"`` or a
            callable on the logits.
        batch_size: at most this many masked inputs per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, players)
        self.masker = check_masker(masker, players, type(self).__name__)
        self.link = get_link(link)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def _evaluate(
        self,
        x: Tensor,
        masks: Tensor,
        consume: Callable[[int, int, int, Tensor], None],
        masker: Callable | None = None,
    ) -> None:
        """Run every (input, mask) pair and hand the values to ``consume(b, first, stop, values)``.

        ``values`` are the linked outputs of input ``b`` under ``masks[first:stop]``. Pairs are flattened input by
        input and cut into chunks of ``batch_size``, so small ``d`` still fills the forward passes. ``masker``
        replaces ``self.masker`` (e.g. a baseline fill's soft path).
        """
        masker = self.masker if masker is None else masker
        num_masks = masks.shape[0]
        total = x.shape[0] * num_masks
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            flat = torch.arange(start, stop, device=x.device)
            values = self.link(masker(self.model, x[flat // num_masks], masks[flat % num_masks]))
            for b in range(start // num_masks, (stop - 1) // num_masks + 1):
                lo, hi = max(start, b * num_masks), min(stop, (b + 1) * num_masks)
                consume(b, lo - b * num_masks, hi - b * num_masks, values[lo - start : hi - start])

    def _all_classes(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _outputs(self, x: Tensor, masks: Tensor, masker: Callable | None = None) -> Tensor:
        """The linked outputs of every input under every mask, ``(B, N, C)``."""
        holder: list[Tensor] = []  # allocated once the first chunk tells C

        def consume(b: int, first: int, stop: int, values: Tensor) -> None:
            if not holder:
                holder.append(values.new_empty(x.shape[0], masks.shape[0], values.shape[-1]))
            holder[0][b, first:stop] = values

        self._evaluate(x, masks, consume, masker)
        return holder[0]

    def attribute_all(self, x: Tensor) -> Tensor:
        """Attributions for every class at once, ``(B, d, C)``."""
        self.check_input(x)
        with torch.no_grad(), preserved_model_state(self.model):
            return self._all_classes(x)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            if target is None:
                everyone = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
                target = resolve_target(None, x.shape[0], self.masker(self.model, x, everyone))
            values = self._all_classes(x)
            return select_target(values, resolve_target(target, x.shape[0], values[:, 0]))


class LeaveOneOut(PerturbationAttribution):
    """Leave-one-out: how much the output drops when one player is removed, ``v(all) - v(all - {i})``.

    For an additive model ``v(S) = b + sum_{i in S} c_i`` (with ``link="logits"``) the result is ``c_i`` exactly.
    Args are those of :class:`PerturbationAttribution`.
    """

    name = "leave_one_out"

    def _all_classes(self, x: Tensor) -> Tensor:
        d = self.players.num_players
        masks = torch.ones(d + 1, d, dtype=torch.bool, device=x.device)
        masks[1:] = ~torch.eye(d, dtype=torch.bool, device=x.device)  # row 0 keeps everyone, row i+1 drops i
        holder: list[Tensor] = []  # the (B, d + 1, C) outputs, allocated once the first chunk tells C

        def consume(b: int, first: int, stop: int, values: Tensor) -> None:
            if not holder:
                holder.append(values.new_empty(x.shape[0], d + 1, values.shape[-1]))
            holder[0][b, first:stop] = values

        self._evaluate(x, masks, consume)
        outputs = holder[0]
        return outputs[:, :1] - outputs[:, 1:]


class RISE(PerturbationAttribution):
    """RISE at player level: ``E[v(S) | player i kept]`` over random masks.

    Args:
        model: the network to explain.
        players: the players of the input.
        masker: ``masker(model, x, keep) -> logits`` (required).
        num_masks: random masks per input (the paper uses 4000-8000 on 7x7 grids; fewer suffice for few players).
        keep_prob: probability that a mask keeps each player (the paper's ``p = 0.5``).
        seed: seed of the masks; the same masks are used for every input and every call. ``None`` draws new masks
            from the global random state.
        link: scale of the values (default ``"softmax"``, the paper's probabilities).
        batch_size: at most this many masked inputs per forward pass.
    """

    name = "rise"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        num_masks: int = 2000,
        keep_prob: float = 0.5,
        seed: int | None = 0,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        if num_masks < 1:
            raise ValueError(f"num_masks must be at least 1, got {num_masks}")
        if not 0.0 < keep_prob < 1.0:
            raise ValueError(f"keep_prob must lie strictly between 0 and 1, got {keep_prob}")
        self.num_masks = int(num_masks)
        self.keep_prob = float(keep_prob)
        self.seed = seed

    def sample_masks(self, device: torch.device | str = "cpu") -> Tensor:
        """The ``(num_masks, d)`` keep-masks (drawn on the CPU so a seed gives the same masks on every device)."""
        generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        masks = torch.rand(self.num_masks, self.players.num_players, generator=generator) < self.keep_prob
        return masks.to(device)

    def _mask_sums(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Evaluate every input under the masks: ``(masks (N, d), Σ_n v(S_n) 1{i ∈ S_n} (B, d, C), Σ_n v(S_n) (B, C))``."""
        masks = self.sample_masks(x.device)
        sums: list[Tensor | None] = [None] * x.shape[0]  # per input: sum over masks of v(S) * 1{i in S}
        totals: list[Tensor | None] = [None] * x.shape[0]  # per input: sum over masks of v(S)

        def consume(b: int, first: int, stop: int, values: Tensor) -> None:
            weighted = masks[first:stop].to(values.dtype).T @ values
            sums[b] = weighted if sums[b] is None else sums[b] + weighted
            totals[b] = values.sum(0) if totals[b] is None else totals[b] + values.sum(0)

        self._evaluate(x, masks, consume)
        return masks, torch.stack(sums), torch.stack(totals)

    def _all_classes(self, x: Tensor) -> Tensor:
        masks, sums, totals = self._mask_sums(x)
        return self._rise(masks, sums, totals)

    def _rise(self, masks: Tensor, sums: Tensor, totals: Tensor) -> Tensor:
        counts = masks.sum(dim=0).to(sums.dtype)
        importance = sums / counts.clamp_min(1).view(1, -1, 1)
        # A player no mask kept carries no information: give it the unconditional mean.
        never = counts == 0
        if bool(never.any()):
            mean = totals / self.num_masks
            importance[:, never] = mean.unsqueeze(1).expand(-1, int(never.sum()), -1)
        return importance

    def attribute_all_and_banzhaf(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RISE and the Banzhaf values from the same evaluations, both ``(B, d, C)`` (needs ``keep_prob=0.5``).

        RISE's masks with ``p = 1/2`` are the uniform coalitions of the Banzhaf value's maximum-sample-reuse
        estimator (Wang & Jia, AISTATS 2023): ``E[v(S) | i ∈ S]`` is RISE's saliency, and subtracting
        ``E[v(S) | i ∉ S]``, from the same sums, gives the Banzhaf value at no extra model evaluation.
        """
        if self.keep_prob != 0.5:
            raise ValueError(
                f"Banzhaf values need masks that keep each player with probability 1/2, got keep_prob={self.keep_prob}"
            )
        self.check_input(x)
        with torch.no_grad(), preserved_model_state(self.model):
            masks, sums, totals = self._mask_sums(x)
        return self._rise(masks, sums, totals), _banzhaf(masks, sums, totals)


def _banzhaf(masks: Tensor, sums: Tensor, totals: Tensor) -> Tensor:
    """``mean v(S ∋ i) - mean v(S ∌ i)`` from RISE's sums, ``(B, d, C)``."""
    counts = masks.sum(dim=0).to(sums.dtype)
    if bool(((counts == 0) | (counts == masks.shape[0])).any()):
        raise ValueError("some player was kept by every mask or by none: Banzhaf values need more masks")
    outside = totals.unsqueeze(1) - sums
    return sums / counts.view(1, -1, 1) - outside / (masks.shape[0] - counts).view(1, -1, 1)
