"""Amortized greedy dynamic feature selection: a policy network and a predictor (pure PyTorch, no Lightning).

Covert, Qiu, Lu, Kim, White & Lee, "Learning to Maximize Mutual Information for Dynamic Feature Selection",
ICML 2023. Features are acquired one at a time; at each step the *policy* network looks at the features seen so
far and picks the next one, and the *predictor* predicts from any subset. Both networks see the masked input with
its mask appended (:class:`~lit_xai.masking.AppendMask`), so "missing" is never confused with "zero".

The greedy policy that picks the feature with the largest conditional mutual information with the label is the
one minimising the expected loss of an optimal predictor one step ahead, so it can be learned directly: at each
step a Concrete (Gumbel-softmax) relaxation of the policy's choice softly adds a feature to the mask and the
predictor's loss is back-propagated into both networks (:meth:`DynamicSelector.relaxed_loss`). At inference the
choice is the policy's argmax (:meth:`DynamicSelector.select`).

Non-uniform costs (the paper's extension): with per-feature costs ``c`` the greedy criterion becomes the value per
unit cost, ``argmax_i I(y; x_i | x_S) / c_i``. The expected loss reduction of an optimal predictor *is* that
conditional mutual information, so the relaxed objective becomes ``(loss(S + soft) - loss(S)) / <soft, c>``:
minimising it maximises the loss reduction per unit cost, and with equal costs it has the same gradients as the
uniform-cost objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.masking import AppendMask
from lit_xai.models import build_model
from lit_xai.players import FeatureGroups, Players, check_keep, players_for

__all__ = ["DynamicSelector", "Selection", "build_players", "build_network", "concrete_sample", "check_costs"]


def build_players(
    image_size: int | Sequence[int] | None = None,
    patch_size: int | Sequence[int] = 1,
    num_features: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> Players:
    """The selectable units: pixel blocks of an image (``image_size``) or tabular columns (``num_features``).

    Args:
        image_size: ``H`` or ``(H, W)`` for images; players are ``patch_size`` blocks (1 = single pixels).
        patch_size: side of the pixel blocks selected together (e.g. 2 for 2x2 groups).
        num_features: number of columns for tabular data.
        groups: optional column groups selected together (tabular only), see :class:`FeatureGroups`.
    """
    if (image_size is None) == (num_features is None):
        raise ValueError("give exactly one of image_size (images) or num_features (tabular data)")
    return players_for(image_size=image_size, patch_size=patch_size, num_features=num_features, groups=groups)


def build_network(
    name: str,
    players: Players,
    num_outputs: int,
    in_chans: int = 1,
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A network fed the :class:`AppendMask` input, sized from the players.

    ``"mlp"`` gets ``in_features`` (data plus mask), ``"cnn"`` and timm models get ``in_chans`` (channels plus the
    mask channel) and timm models also ``img_size``; anything given in ``kwargs`` wins.
    """
    kwargs = dict(kwargs or {})
    extra = AppendMask(players).extra_inputs()
    if isinstance(players, FeatureGroups):
        if name != "mlp":
            raise ValueError(f"tabular data needs the 'mlp' network, got {name!r}")
        kwargs.setdefault("in_features", players.num_features + extra)
    elif name == "mlp":
        h, w = players.image_size
        kwargs.setdefault("in_features", (in_chans + extra) * h * w)
    else:
        kwargs.setdefault("in_chans", in_chans + extra)
        if name != "cnn":
            kwargs.setdefault("img_size", players.image_size)
    return build_model(name, num_outputs, **kwargs)


def check_costs(costs: Sequence[float] | Tensor | None, num_players: int) -> Tensor | None:
    """Validate per-feature acquisition costs: one positive finite number per player."""
    if costs is None:
        return None
    costs = torch.as_tensor(costs, dtype=torch.float32).flatten()
    if costs.numel() != num_players:
        raise ValueError(f"costs must have one entry per feature ({num_players}), got {costs.numel()}")
    if not torch.isfinite(costs).all() or (costs <= 0).any():
        raise ValueError("costs must be positive and finite; give every feature a cost > 0 (e.g. 1.0)")
    return costs


def concrete_sample(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """A relaxed one-hot sample ``softmax((logits + Gumbel noise) / temperature)`` (Maddison et al., 2017).

    Entries with logit ``-inf`` get exactly zero weight. The argmax of the sample is an exact draw from
    ``Categorical(logits)`` at any temperature (the Gumbel-max trick).
    """
    if temperature <= 0:
        raise ValueError(f"the Concrete temperature must be positive, got {temperature}")
    # Drawn where the generator lives (a CPU generator gives the same noise on any device), then moved.
    device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=device, dtype=logits.dtype).to(
        logits.device
    )
    tiny = torch.finfo(logits.dtype).tiny
    exponential = -torch.log(uniform.clamp_min(tiny))  # > 0; clamped so neither log sees zero
    gumbel = -torch.log(exponential.clamp_min(tiny))
    return torch.softmax((logits + gumbel) / temperature, dim=-1)


@dataclass
class Selection:
    """What :meth:`DynamicSelector.select` returns.

    Attributes:
        order: ``(B, T)`` long, the feature chosen at each step; ``-1`` once a sample has stopped.
        logits: ``(B, T + 1, C)``, ``logits[:, k]`` is the prediction after ``k`` selections (a stopped sample
            keeps its last prediction).
        keep: ``(B, d)`` bool, the features acquired in the end.
        num_selected: ``(B,)`` long, how many features each sample acquired.
    """

    order: Tensor
    logits: Tensor
    keep: Tensor
    num_selected: Tensor

    @property
    def final_logits(self) -> Tensor:
        """``(B, C)``: the prediction each sample stopped with."""
        return self.logits[:, -1]


class DynamicSelector(nn.Module):
    """A predictor and a selection policy over the same players, both fed the masked input with its mask.

    Args:
        predictor: network mapping the :class:`AppendMask` input to class logits.
        policy: network mapping the same input to one logit per player (the next feature's score).
        players: the selectable units (:class:`PatchGrid` or :class:`FeatureGroups`).
        costs: optional acquisition cost per player (positive); the policy is then trained to pick the best value
            per unit cost, and ``select(max_cost=...)`` budgets in the same units.
    """

    def __init__(
        self,
        predictor: nn.Module,
        policy: nn.Module,
        players: Players,
        costs: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.policy = policy
        self.players = players
        self.masker = AppendMask(players)
        costs = check_costs(costs, players.num_players)
        self.register_buffer("costs", costs)

    @property
    def num_players(self) -> int:
        return self.players.num_players

    def masked_input(self, x: Tensor, mask: Tensor) -> Tensor:
        """The input both networks see: ``x`` with missing features zeroed, the mask appended.

        ``mask`` is a bool keep-mask, or a float mask in ``[0, 1]`` during relaxed training (a soft selection has
        to reach the networks as a fraction, so it is expanded with ``upsample``, which accepts fractions).
        """
        if mask.dtype == torch.bool:
            return self.masker.mask_input(x, mask)
        values = self.players.upsample(mask.to(x.dtype))
        if isinstance(self.players, FeatureGroups):
            return torch.cat([x * values, mask.to(x.dtype)], dim=1)
        values = values.unsqueeze(1)
        return torch.cat([x * values, values], dim=1)

    def _check(self, x: Tensor, keep: Tensor | None = None) -> Tensor | None:
        self.players.check_input(x)
        if keep is None:
            return None
        return check_keep(keep, self.num_players, batch_size=x.shape[0]).to(x.device)

    def predict(self, x: Tensor, keep: Tensor) -> Tensor:
        """Class logits from the features in ``keep`` ``(B, d)`` only."""
        keep = self._check(x, keep)
        return self.predictor(self.masked_input(x, keep))

    def policy_logits(self, x: Tensor, keep: Tensor) -> Tensor:
        """The policy's score for every player ``(B, d)`` given the features in ``keep`` (raw, nothing excluded)."""
        logits = self.policy(self.masked_input(x, keep)).flatten(1)
        if logits.shape[1] != self.num_players:
            raise ValueError(
                f"the policy returned {logits.shape[1]} scores but there are {self.num_players} features; "
                f"build it with num_outputs={self.num_players}"
            )
        return logits

    def relaxed_loss(
        self,
        x: Tensor,
        target: Tensor,
        num_steps: int,
        temperature: float,
        logit_scale: float = 0.2,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The joint training objective, averaged over ``num_steps`` selection steps.

        At each step the policy's logits (already-chosen features excluded, divided by ``logit_scale``) give a
        Concrete sample; the predictor's loss on the mask ``max(keep, soft)`` is what the gradient flows through;
        then the hard choice (the sample's argmax, an exact draw from the policy, so training explores) joins
        ``keep``. The policy always sees hard masks, as it will at inference.

        Args:
            x: inputs ``(B, ...)``.
            target: labels ``(B,)``.
            num_steps: selection steps (``max_features``).
            temperature: Concrete temperature; lower is closer to a hard choice.
            logit_scale: the logits are divided by this before sampling (the authors use 0.2).
            loss_fn: per-sample loss ``(logits, target) -> (B,)``; cross-entropy by default.
            generator: random generator for the Gumbel noise.
        """
        self._check(x)
        if not 1 <= num_steps <= self.num_players:
            raise ValueError(
                f"num_steps must be in 1..{self.num_players} (the number of features), got {num_steps}"
            )
        if loss_fn is None:
            loss_fn = lambda logits, y: F.cross_entropy(logits, y, reduction="none")  # noqa: E731
        keep = torch.zeros(x.shape[0], self.num_players, dtype=torch.bool, device=x.device)
        total = x.new_zeros(())
        for _ in range(num_steps):
            logits = self.policy_logits(x, keep).masked_fill(keep, float("-inf"))
            soft = concrete_sample(logits / logit_scale, temperature, generator)
            # Chosen features have zero soft weight (their logit is -inf), so the max keeps them at exactly one.
            loss = loss_fn(
                self.predictor(self.masked_input(x, torch.maximum(keep.to(soft.dtype), soft))), target
            )
            if self.costs is not None:
                with torch.no_grad():
                    before = loss_fn(self.predictor(self.masked_input(x, keep)), target)
                # Mean-one costs keep the loss scale independent of the unit the costs are given in.
                loss = (loss - before) / (soft @ (self.costs / self.costs.mean()))
            total = total + loss.mean()
            keep = keep | F.one_hot(soft.argmax(dim=1), self.num_players).bool()
        return total / num_steps

    def hard_loss(self, selection: Selection, target: Tensor) -> Tensor:
        """Per-sample loss of a hard selection, the quantity :meth:`relaxed_loss` relaxes, ``(B,)``.

        Without costs: the cross-entropy after each step, averaged over steps. With costs: the change in
        cross-entropy per unit cost of each step's pick, averaged over steps (lower is better in both cases).
        """
        steps = selection.logits
        labels = target.unsqueeze(1).expand(-1, steps.shape[1])
        loss = F.cross_entropy(steps.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        if self.costs is None:
            return loss[:, 1:].mean(dim=1)
        costs = (self.costs / self.costs.mean())[selection.order.clamp_min(0)]
        per_cost = (loss[:, 1:] - loss[:, :-1]) / costs
        return per_cost.masked_fill(selection.order < 0, 0.0).mean(dim=1)

    @torch.no_grad()
    def select(
        self,
        x: Tensor,
        budget: int | None = None,
        confidence: float | None = None,
        max_cost: float | None = None,
    ) -> Selection:
        """Select features one at a time with the policy's argmax, predicting after each step.

        Stopping rules (any combination; a sample stops at the first that applies):

        - ``budget``: at most this many features (default: all of them).
        - ``confidence``: a sample stops once its predicted class probability reaches this value.
        - ``max_cost``: the total cost (in the units the costs were given, or one per feature) never exceeds this;
          the next pick is the best affordable feature, and a sample stops when none is affordable.

        Args:
            x: inputs ``(B, ...)``.
            budget: maximum number of features, ``0 <= budget <= d``.
            confidence: probability threshold in ``(0, 1]``.
            max_cost: cost budget, ``>= 0``.
        """
        self._check(x)
        d = self.num_players
        if budget is None:
            budget = d
        if not isinstance(budget, int) or isinstance(budget, bool) or not 0 <= budget <= d:
            raise ValueError(f"budget must be an integer in 0..{d} (the number of features), got {budget!r}")
        if confidence is not None and not 0 < confidence <= 1:
            raise ValueError(f"confidence must be a probability in (0, 1], got {confidence}")
        if max_cost is not None and max_cost < 0:
            raise ValueError(f"max_cost must be non-negative, got {max_cost}")
        batch = x.shape[0]
        keep = torch.zeros(batch, d, dtype=torch.bool, device=x.device)
        active = torch.ones(batch, dtype=torch.bool, device=x.device)
        spent = torch.zeros(batch, device=x.device)
        costs = self._costs_on(x.device)
        order = torch.full((batch, budget), -1, dtype=torch.long, device=x.device)
        pred = self.predictor(self.masked_input(x, keep))
        steps = [pred]
        for t in range(budget):
            if confidence is not None:
                active &= pred.softmax(dim=-1).amax(dim=-1) < confidence
            logits = self.policy_logits(x, keep).masked_fill(keep, float("-inf"))
            if max_cost is not None:
                logits = logits.masked_fill(spent.unsqueeze(1) + costs > max_cost * (1 + 1e-6), float("-inf"))
                active &= torch.isfinite(logits).any(dim=1)
            if not active.any():
                steps.extend([pred] * (budget - t))
                break
            choice = logits.argmax(dim=1)
            order[:, t] = torch.where(active, choice, -1)
            keep = keep | (F.one_hot(choice, d).bool() & active.unsqueeze(1))
            spent = spent + torch.where(active, costs[choice], 0.0)
            new_pred = self.predictor(self.masked_input(x, keep))
            pred = torch.where(active.unsqueeze(1), new_pred, pred)
            steps.append(pred)
        return Selection(
            order=order, logits=torch.stack(steps, dim=1), keep=keep, num_selected=keep.sum(dim=1)
        )

    def _costs_on(self, device: torch.device) -> Tensor:
        """Per-feature costs, one per feature when none were given."""
        if self.costs is None:
            return torch.ones(self.num_players, device=device)
        return self.costs.to(device)
