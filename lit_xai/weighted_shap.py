"""WeightedSHAP: the semivalue that recovers the prediction fastest (Kwon & Zou, "WeightedSHAP: analyzing and
improving Shapley based feature attributions", NeurIPS 2022).

The Shapley value weighs a feature's marginal contributions equally over coalition sizes, which can rank features
poorly (the paper's examples). WeightedSHAP estimates the contributions by size once (permutation sampling,
:func:`lit_xai.semivalues.permutation_sampling`), forms a family of semivalues from them — leave-one-out on the
empty coalition (LOO-first), Beta Shapley ``(32, 1) ... (1, 32)``, leave-one-out on the full coalition (LOO-last),
the authors' 13 candidates — and keeps, per input and class, the one with the smallest *prediction-recovery error*:
adding features in the order of ``|φ|``, largest first, ``Σ_{k=0..d} |v(S_k) - v(all)|`` (the area between the
prediction along the way and the full prediction; the authors' AUP). Ties go to the Shapley value, so WeightedSHAP
is the Shapley value unless another candidate recovers strictly better on that input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lit_xai.games import Game, evaluate_game
from lit_xai.semivalues import PermutationResult, beta_size_weights

__all__ = ["SHAPLEY", "WeightedShapResult", "default_candidates", "recovery_error", "weighted_shap"]

#: The candidate that wins ties.
SHAPLEY = "Beta(1,1)"


def default_candidates(num_players: int) -> dict[str, Tensor]:
    """The authors' 13 candidates as masses over coalition sizes ``0..d-1``, from LOO-first to LOO-last."""
    d = num_players
    first, last = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    first[0], last[-1] = 1.0, 1.0
    candidates = {"LOO-first": first}
    for alpha, beta in [
        (32, 1),
        (16, 1),
        (8, 1),
        (4, 1),
        (2, 1),
        (1, 1),
        (1, 2),
        (1, 4),
        (1, 8),
        (1, 16),
        (1, 32),
    ]:
        candidates[f"Beta({alpha},{beta})"] = beta_size_weights(d, alpha, beta)
    candidates["LOO-last"] = last
    return candidates


@dataclass
class WeightedShapResult:
    """What :func:`weighted_shap` returns.

    Attributes:
        values: the chosen semivalue per input and class, ``(B, d, C)``.
        choice: index into ``names`` of the chosen candidate, ``(B, C)``.
        errors: prediction-recovery error of every candidate, ``(B, K, C)`` (inf for a candidate the sampled
            permutations cannot estimate, e.g. LOO-first when some player was never drawn first).
        names: the candidates' names, ``K``.
        candidates: every candidate's values, ``(B, K, d, C)``.
        recovery_evaluations: coalitions evaluated per input for the recovery curves (distinct ones only).
    """

    values: Tensor
    choice: Tensor
    errors: Tensor
    names: list[str]
    candidates: Tensor
    recovery_evaluations: Tensor


def _insertion_masks(values: Tensor) -> Tensor:
    """Keep-masks adding players by ``|value|``, largest first: ``(..., d) -> (..., d + 1, d)``, row ``k`` keeps the
    top ``k``."""
    d = values.shape[-1]
    # stable: equal magnitudes keep player order, so the curve is reproducible
    order = values.abs().argsort(dim=-1, descending=True, stable=True)
    rank = order.argsort(dim=-1)
    return rank.unsqueeze(-2) < torch.arange(d + 1, device=values.device).view(-1, 1)


def _input_game(game: Game, b: int, num_inputs: int) -> Game:
    """The game of input ``b`` alone: ``game.subset`` where it exists (no wasted evaluations), else row ``b``."""
    subset = getattr(game, "subset", None)
    if subset is not None and num_inputs > 1:
        device = getattr(game, "device", None)
        return subset(torch.tensor([b], device=device))

    def row(keep: Tensor) -> Tensor:
        values = game(keep)
        return values[b : b + 1] if values.dim() == 3 else values.unsqueeze(0)

    return row


def recovery_error(game: Game, values: Tensor) -> tuple[Tensor, Tensor]:
    """Prediction-recovery error of attributions: ``Σ_{k=0..d} |v(S_k) - v(all)|``, ``S_k`` the top ``k`` by ``|φ|``.

    Args:
        game: maps keep-masks ``(N, d)`` to ``(B, N, C)`` (or ``(N, C)`` for one input).
        values: attributions ``(B, K, d, C)``: ``K`` candidates per input and class (one attribution ``(B, d, C)``
            is ``values.unsqueeze(1)``).

    Returns:
        ``(errors (B, K, C), evaluations (B,))``: the error of every candidate for its own class, and the distinct
        coalitions each input needed.
    """
    bsz, k, d, c = values.shape
    errors = torch.zeros(bsz, k, c, dtype=torch.float64)
    evaluations = torch.zeros(bsz, dtype=torch.long)
    for b in range(bsz):
        masks = _insertion_masks(values[b].permute(0, 2, 1).cpu())  # (K, C, d + 1, d)
        unique, inverse = torch.unique(masks.reshape(-1, d), dim=0, return_inverse=True)
        device = getattr(game, "device", None)
        outputs, _ = evaluate_game(_input_game(game, b, bsz), unique.to(device))
        outputs = outputs[0].double().cpu()  # (N_unique, C)
        curve = outputs[inverse].reshape(k, c, d + 1, c)  # value of every class on each candidate's masks
        own = curve.diagonal(dim1=1, dim2=3)  # (K, d + 1, C): class c on the masks ordered for class c
        full = own[:, -1:, :]  # S_d = all players
        errors[b] = (own - full).abs().sum(1)
        evaluations[b] = unique.shape[0]
    return errors, evaluations


def weighted_shap(
    game: Game, contributions: PermutationResult, candidates: dict[str, Tensor] | None = None
) -> WeightedShapResult:
    """WeightedSHAP from marginal contributions by coalition size (Kwon & Zou, NeurIPS 2022).

    Args:
        game: the game the contributions were sampled from (``(B, N, C)`` values, the same inputs and classes).
        contributions: :func:`lit_xai.semivalues.permutation_sampling`'s result on ``game``.
        candidates: ``{name: size masses q_s}``; default :func:`default_candidates` (must include ``"Beta(1,1)"``,
            the Shapley value, which wins ties).

    Returns:
        A :class:`WeightedShapResult`.
    """
    d = contributions.counts.shape[0]
    candidates = default_candidates(d) if candidates is None else candidates
    if SHAPLEY not in candidates:
        raise ValueError(
            f"the candidates must include the Shapley value as {SHAPLEY!r}, got {list(candidates)}"
        )
    names, estimates = [], []
    for name, weights in candidates.items():
        try:
            estimate = contributions.semivalue(weights)
        except (
            ValueError
        ):  # e.g. LOO-first when some player was never drawn first: not estimable at this budget
            estimate = None
        names.append(name)
        estimates.append(estimate)
    shapley = estimates[names.index(SHAPLEY)]
    single = shapley.dim() == 2
    template = shapley.unsqueeze(0) if single else shapley
    missing = [i for i, e in enumerate(estimates) if e is None]
    stacked = torch.stack(
        [(torch.zeros_like(template) if e is None else (e.unsqueeze(0) if single else e)) for e in estimates],
        dim=1,
    )  # (B, K, d, C)
    errors, evaluations = recovery_error(game, stacked)
    if missing:
        errors[:, missing] = torch.inf
    # Ties go to the Shapley value: another candidate is chosen only where it recovers strictly better.
    best = errors.argmin(dim=1)
    s = names.index(SHAPLEY)
    best = torch.where(errors.gather(1, best.unsqueeze(1)).squeeze(1) < errors[:, s], best, s)
    chosen = stacked.gather(1, best.to(stacked.device).view(*best.shape[:1], 1, 1, -1).expand(-1, 1, d, -1))[
        :, 0
    ]
    if single:
        return WeightedShapResult(chosen[0], best[0], errors[0], names, stacked[0], evaluations[0])
    return WeightedShapResult(chosen, best, errors, names, stacked, evaluations)
