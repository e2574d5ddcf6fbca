"""DIME: dynamic feature selection by estimating each candidate's conditional mutual information (pure PyTorch).

Gadgil, Covert & Lee, "Estimating Conditional Mutual Information for Dynamic Feature Selection", ICLR 2024. The
greedy policy acquires next the feature ``i`` with the largest ``I(y; x_i | x_S)``, and for a Bayes-optimal
predictor that mutual information is the expected drop of the cross-entropy when ``x_i`` is added:
``I(y; x_i | x_S) = E[loss(S) - loss(S + i) | x_S]``. So instead of a policy trained through a relaxation (the
amortized greedy policy of :mod:`~lit_xai.algorithms.dynamic_selection.torch_model`), a *value network* regresses
the observed loss drop of each acquired feature (mean squared error), and the predictor learns to predict from the
subsets this choice produces, both at once. The value network's output is bounded as in the authors' code: a
sigmoid times the entropy of the current prediction, since ``0 <= I(y; x_i | x_S) <= H(y | x_S)``.

Training explores ε-greedily: with probability ``epsilon`` a sample acquires a uniformly random feature not yet
acquired (the authors' code draws among all features, repeats included; a repeat teaches the value network nothing
and wastes a step), otherwise the one the value network rates best per unit cost.

At inference the same argmax is taken, and a sample stops at the first rule that applies (any combination):
a feature budget, a cost budget, a confidence threshold, or the *penalised* rule, which stops once no feature's
estimated information per unit cost exceeds ``penalty`` (the solution of maximising CMI minus ``penalty`` times
cost, one step at a time). With per-feature costs ``c`` the choice is ``argmax_i CMI_i / c_i`` (the paper's
non-uniform cost extension).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.algorithms.dynamic_selection.torch_model import Selection, check_costs
from lit_xai.masking import AppendMask
from lit_xai.players import Players, check_keep

__all__ = ["CMISelector", "entropy", "shared_trunk", "tie_hidden_layers"]


def entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of the predicted class distribution, ``(B, C) -> (B,)``."""
    log_probs = logits.log_softmax(dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def tie_hidden_layers(predictor: nn.Module, value_network: nn.Module) -> int:
    """Share every linear layer but the last between two MLPs of the same shape (as the authors do on MNIST).

    The value network then reads the predictor's hidden representation and only its output layer is its own, so
    the two tasks regularise each other and there are half as many weights; :class:`CMISelector` then also runs
    the hidden layers once per subset for both heads (:func:`shared_trunk`). Returns how many layers were tied.
    """
    mine = [i for i, m in enumerate(predictor.net) if isinstance(m, nn.Linear)]
    theirs = [i for i, m in enumerate(value_network.net) if isinstance(m, nn.Linear)]
    if mine != theirs or any(
        predictor.net[i].weight.shape != value_network.net[i].weight.shape for i in mine[:-1]
    ):
        raise ValueError("tie_hidden_layers needs two MLPs with the same input size and hidden widths")
    for i in mine[:-1]:
        value_network.net[i] = predictor.net[i]
    return len(mine) - 1


def shared_trunk(predictor: nn.Module, value_network: nn.Module) -> nn.Sequential | None:
    """The hidden layers two MLPs share after :func:`tie_hidden_layers`, or ``None`` if they share none.

    Shared means: both are ``net`` sequences of the same length whose modules before the output layer are the same
    objects, or parameter-free ones of the same kind and settings (activation, dropout, flatten). Then one pass
    through the predictor's hidden layers serves both output layers: on the same masked input the value network
    would compute the same hidden representation again (up to its own dropout draw, in training).
    """
    mine, theirs = getattr(predictor, "net", None), getattr(value_network, "net", None)
    if not (isinstance(mine, nn.Sequential) and isinstance(theirs, nn.Sequential)):
        return None
    if len(mine) != len(theirs):
        return None
    tied = False
    for a, b in zip(mine[:-1], theirs[:-1]):
        has_weights = next(a.parameters(), None) is not None
        same = a is b if has_weights else repr(a) == repr(b)  # repr: the same kind and settings (dropout p)
        if not same:
            return None
        tied |= has_weights
    return mine[:-1] if tied else None


class CMISelector(nn.Module):
    """A predictor and a CMI value network over the same players, both fed the masked input with its mask.

    Args:
        predictor: network mapping the :class:`AppendMask` input to class logits ``(B, C)``.
        value_network: network mapping the same input to one raw score per player ``(B, d)``.
        players: the selectable units.
        costs: optional acquisition cost per player (positive); choices maximise estimated CMI per unit cost and
            ``select(max_cost=...)`` budgets in the same units.
    """

    def __init__(
        self,
        predictor: nn.Module,
        value_network: nn.Module,
        players: Players,
        costs: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.value_network = value_network
        self.players = players
        self.masker = AppendMask(players)
        self.register_buffer("costs", check_costs(costs, players.num_players))

    @property
    def num_players(self) -> int:
        return self.players.num_players

    def _costs_on(self, device: torch.device) -> Tensor:
        if self.costs is None:
            return torch.ones(self.num_players, device=device)
        return self.costs.to(device)

    def predict(self, x: Tensor, keep: Tensor) -> Tensor:
        """Class logits from the features in ``keep`` ``(B, d)`` only."""
        self.players.check_input(x)
        keep = check_keep(keep, self.num_players, batch_size=x.shape[0]).to(x.device)
        return self.predictor(self.masker.mask_input(x, keep))

    def _forward(self, x: Tensor, keep: Tensor, trunk: nn.Sequential | None) -> tuple[Tensor, Tensor | None]:
        """Class logits for ``keep``, and the hidden representation the value network shares (``None`` without a
        shared ``trunk``, see :func:`shared_trunk`): with tied hidden layers one pass serves both networks
        (``benchmarks/dime_shared_pass.py`` times it at MNIST's size)."""
        masked = self.masker.mask_input(x, keep)
        if trunk is None:
            return self.predictor(masked), None
        hidden = trunk(masked)
        return self.predictor.net[-1](hidden), hidden

    def estimate_cmi(self, x: Tensor, keep: Tensor, logits: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Estimated ``I(y; x_i | x_keep)`` for every player ``(B, d)``, in ``[0, H(prediction)]``.

        ``logits`` is the predictor's output for the same ``keep`` (its entropy bounds the estimate; it is not
        differentiated through, so the value loss trains the value network only). ``hidden``: the shared hidden
        representation of the same masked input, if the predictor's pass already computed it.
        """
        if hidden is not None:
            scores = self.value_network.net[-1](hidden).flatten(1)
        else:
            scores = self.value_network(self.masker.mask_input(x, keep)).flatten(1)
        if scores.shape[1] != self.num_players:
            raise ValueError(
                f"the value network returned {scores.shape[1]} scores but there are {self.num_players} features; "
                f"build it with num_outputs={self.num_players}"
            )
        return scores.sigmoid() * entropy(logits.detach()).unsqueeze(1)

    def training_losses(
        self,
        x: Tensor,
        target: Tensor,
        num_steps: int,
        epsilon: float,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The joint objective over ``num_steps`` acquisitions: ``(predictor loss, value loss)``, both scalars.

        The predictor loss is the cross-entropy averaged over the ``num_steps + 1`` subsets visited (empty one
        included); the value loss is the squared error between the estimated CMI of each acquired feature and the
        observed drop of the (detached) cross-entropy it caused, averaged over steps.

        Args:
            x: inputs ``(B, ...)``.
            target: labels ``(B,)``.
            num_steps: acquisitions per sample (``max_features``).
            epsilon: probability of acquiring a random not-yet-acquired feature instead of the best one.
            generator: CPU generator for the exploration draws.
        """
        self.players.check_input(x)
        d = self.num_players
        if not 1 <= num_steps <= d:
            raise ValueError(f"num_steps must be in 1..{d} (the number of features), got {num_steps}")
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be a probability in [0, 1], got {epsilon}")
        batch = x.shape[0]
        costs = self._costs_on(x.device)
        keep = torch.zeros(batch, d, dtype=torch.bool, device=x.device)
        trunk = shared_trunk(self.predictor, self.value_network)
        logits, hidden = self._forward(x, keep, trunk)
        loss_before = F.cross_entropy(logits, target, reduction="none")
        predictor_loss = loss_before.mean()
        value_loss = x.new_zeros(())
        rows = torch.arange(batch, device=x.device)
        for _ in range(num_steps):
            cmi = self.estimate_cmi(x, keep, logits, hidden)
            best = (cmi / costs).masked_fill(keep, float("-inf")).argmax(dim=1)
            # A uniform draw among the features not yet acquired (random scores, acquired ones excluded).
            noise = torch.rand(batch, d, generator=generator).to(x.device).masked_fill(keep, -1.0)
            explore = (torch.rand(batch, generator=generator) < epsilon).to(x.device)
            action = torch.where(explore, noise.argmax(dim=1), best)
            keep = keep.clone()
            keep[rows, action] = True
            logits, hidden = self._forward(x, keep, trunk)
            loss_after = F.cross_entropy(logits, target, reduction="none")
            drop = (loss_before - loss_after).detach()
            value_loss = value_loss + F.mse_loss(cmi[rows, action], drop)
            predictor_loss = predictor_loss + loss_after.mean()
            loss_before = loss_after.detach()
        return predictor_loss / (num_steps + 1), value_loss / num_steps

    @torch.no_grad()
    def select(
        self,
        x: Tensor,
        budget: int | None = None,
        confidence: float | None = None,
        max_cost: float | None = None,
        penalty: float | None = None,
    ) -> Selection:
        """Acquire features one at a time by the largest estimated CMI per unit cost, predicting after each step.

        Stopping rules (any combination; a sample stops at the first that applies):

        - ``budget``: at most this many features (default: all of them).
        - ``confidence``: stop once the predicted class probability reaches this value.
        - ``max_cost``: the total cost never exceeds this; the next pick is the best affordable feature, and a
          sample stops when none is affordable.
        - ``penalty``: stop once no feature's estimated CMI per unit cost exceeds this (nats per unit cost).

        Returns:
            :class:`Selection` as :meth:`DynamicSelector.select` (``order`` ``-1`` once a sample has stopped).
        """
        self.players.check_input(x)
        d = self.num_players
        if budget is None:
            budget = d
        if not isinstance(budget, int) or isinstance(budget, bool) or not 0 <= budget <= d:
            raise ValueError(f"budget must be an integer in 0..{d} (the number of features), got {budget!r}")
        if confidence is not None and not 0 < confidence <= 1:
            raise ValueError(f"confidence must be a probability in (0, 1], got {confidence}")
        if max_cost is not None and max_cost < 0:
            raise ValueError(f"max_cost must be non-negative, got {max_cost}")
        if penalty is not None and penalty < 0:
            raise ValueError(f"penalty must be non-negative, got {penalty}")
        batch = x.shape[0]
        costs = self._costs_on(x.device)
        keep = torch.zeros(batch, d, dtype=torch.bool, device=x.device)
        active = torch.ones(batch, dtype=torch.bool, device=x.device)
        spent = torch.zeros(batch, device=x.device)
        order = torch.full((batch, budget), -1, dtype=torch.long, device=x.device)
        trunk = shared_trunk(self.predictor, self.value_network)
        pred, hidden = self._forward(x, keep, trunk)
        steps = [pred]
        for t in range(budget):
            if confidence is not None:
                active &= pred.softmax(dim=-1).amax(dim=-1) < confidence
            value = (self.estimate_cmi(x, keep, pred, hidden) / costs).masked_fill(keep, float("-inf"))
            if max_cost is not None:
                value = value.masked_fill(spent.unsqueeze(1) + costs > max_cost * (1 + 1e-6), float("-inf"))
                active &= torch.isfinite(value).any(dim=1)
            if penalty is not None:
                active &= value.amax(dim=1) > penalty
            if not active.any():
                steps.extend([pred] * (budget - t))
                break
            choice = value.argmax(dim=1)
            order[:, t] = torch.where(active, choice, -1)
            keep = keep | (F.one_hot(choice, d).bool() & active.unsqueeze(1))
            spent = spent + torch.where(active, costs[choice], 0.0)
            new_pred, hidden = self._forward(x, keep, trunk)
            pred = torch.where(active.unsqueeze(1), new_pred, pred)
            steps.append(pred)
        return Selection(
            order=order, logits=torch.stack(steps, dim=1), keep=keep, num_selected=keep.sum(dim=1)
        )
