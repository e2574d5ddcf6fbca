"""Mediation analysis of explanations: how much of a hyperparameter's effect on explanations E passes through the
predictions Y (Karimi, Muandet, Kornblith, Schölkopf & Kim, "On the Relationship Between Explanation and Prediction:
A Causal View", ICML 2023, arXiv 2212.06925).

The causal graph is ``H -> Y -> E`` plus ``H -> E``: hyperparameters H (randomised, so unconfounded) shape the
trained model, whose predictions Y on fixed inputs are explained by E. The paper measures the treatment effects of
hyperparameters on Y and E and the part of the effect on E not through Y; this module's estimator is our own (the
paper's exact estimator could not be consulted here). Treatment effects on high-dimensional outcomes are taken as
distances between the outcomes of two units; with a random (not matched) zoo,
every pair of models ``(i, j)`` is a unit whose treatment is the vector of hyperparameter differences
``|h_i - h_j|`` (an indicator of inequality for a categorical one), and whose outcomes are the distances
``d_Y(i, j)`` and ``d_E(i, j)``. The effects are read from the linear structural model (Baron & Kenny, 1986) fitted
by least squares on the pairs:

- mediator model ``d_Y = a_0 + a · Δh``  (``a_k``: the effect of hyperparameter k on Y),
- outcome model ``d_E = c'_0 + c' · Δh + b d_Y``  (``c'_k``: the direct effect on E; ``b``: the direct influence of
  Y on E, the hyperparameters held fixed),
- total model ``d_E = c_0 + c · Δh``  (``c_k``: the total effect on E),

with indirect effect ``a_k b``. With least squares on the same pairs, ``c = c' + a b`` holds exactly (an
algebraic identity), so total = direct + indirect term by term. The intercepts are the effects of changing nothing
but the seed (two models with equal hyperparameters still differ by ``c_0``). The linear model is the paper's
assumption too; it is a first-order description of distances that saturate, not a law.

Everything here is plain torch in float64 (no Lightning); shapes are stated per function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "MediationResult",
    "bootstrap_pairwise_mediation",
    "linear_mediation",
    "mean_cosine_distance",
    "mean_total_variation",
    "pair_treatments",
    "pairwise_mediation",
]


@dataclass
class MediationResult:
    """Effects of ``k`` treatments on an outcome, split by one mediator (all float64).

    Attributes:
        total: ``(k,)`` total effects ``c``.
        direct: ``(k,)`` direct effects ``c'`` (not through the mediator).
        indirect: ``(k,)`` effects through the mediator, ``a * b``.
        on_mediator: ``(k,)`` effects on the mediator, ``a``.
        mediator_to_outcome: ``b``, the outcome's change per unit of mediator, the treatments held fixed.
        standardized_mediator_to_outcome: ``b * sd(mediator) / sd(outcome)``.
        partial_correlation: correlation of outcome and mediator once both are residualised on the treatments;
            scale-free, so comparable across subsets with different spreads.
        intercepts: ``{"total": c_0, "direct": c'_0, "on_mediator": a_0}``.
        num_units: rows fitted.
    """

    total: Tensor
    direct: Tensor
    indirect: Tensor
    on_mediator: Tensor
    mediator_to_outcome: float
    standardized_mediator_to_outcome: float
    partial_correlation: float
    intercepts: dict[str, float]
    num_units: int


def _least_squares(design: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Coefficients and residuals of ``target ~ design`` (``design`` already has its intercept column)."""
    coef = torch.linalg.lstsq(design, target.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return coef, target - design @ coef


def linear_mediation(treatment: Tensor, mediator: Tensor, outcome: Tensor) -> MediationResult:
    """Total, direct and indirect effects of each treatment column on ``outcome``, with ``mediator`` between.

    Args:
        treatment: ``(n, k)`` treatments (randomised, so no adjustment set is needed).
        mediator: ``(n,)`` the mediator (here the prediction distance).
        outcome: ``(n,)`` the outcome (here the explanation distance).

    Returns:
        :class:`MediationResult`; ``total == direct + indirect`` to rounding.

    Raises:
        ValueError: mismatched lengths, or fewer rows than the ``k + 2`` coefficients of the outcome model.

    Example:
        >>> h = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> y = torch.tensor([0.0, 2.0, 3.0, 7.0])  # a = 2.2 by least squares
        >>> e = 3 * h[:, 0] + 0.5 * y  # direct 3, b = 0.5
        >>> r = linear_mediation(h, y, e)
        >>> [round(float(v), 6) for v in (r.direct[0], r.indirect[0], r.total[0])]
        [3.0, 1.1, 4.1]
    """
    if treatment.dim() != 2 or mediator.dim() != 1 or outcome.dim() != 1:
        raise ValueError(
            f"expected treatment (n, k), mediator (n,) and outcome (n,), got {tuple(treatment.shape)}, "
            f"{tuple(mediator.shape)} and {tuple(outcome.shape)}"
        )
    n, k = treatment.shape
    if mediator.shape[0] != n or outcome.shape[0] != n:
        raise ValueError(
            f"treatment, mediator and outcome need the same rows, got {n}, {len(mediator)}, {len(outcome)}"
        )
    if n < k + 3:
        raise ValueError(f"{n} rows cannot fit {k} treatments, a mediator and an intercept; use more units")
    h = torch.cat([torch.ones(n, 1, dtype=torch.float64), treatment.double()], dim=1)
    y, e = mediator.double(), outcome.double()
    a, y_residual = _least_squares(h, y)
    c, _ = _least_squares(h, e)
    coef, _ = _least_squares(torch.cat([h, y.unsqueeze(1)], dim=1), e)
    b = float(coef[-1])
    _, e_residual = _least_squares(h, e)
    denominator = float(y_residual.norm() * e_residual.norm())
    partial = float(y_residual @ e_residual) / denominator if denominator > 0 else float("nan")
    spread = float(e.std())
    return MediationResult(
        total=c[1:],
        direct=coef[1:-1],
        indirect=a[1:] * b,
        on_mediator=a[1:],
        mediator_to_outcome=b,
        standardized_mediator_to_outcome=b * float(y.std()) / spread if spread > 0 else float("nan"),
        partial_correlation=partial,
        intercepts={"total": float(c[0]), "direct": float(coef[0]), "on_mediator": float(a[0])},
        num_units=n,
    )


def pair_treatments(hyperparameters: Tensor, categorical: Sequence[bool]) -> tuple[Tensor, Tensor]:
    """The treatment of every unordered pair of units: ``|h_i - h_j|``, or ``h_i != h_j`` for a categorical column.

    Args:
        hyperparameters: ``(m, k)`` one row per unit (model); put continuous ones on the scale their effect is
            linear in (e.g. ``log10`` of a learning rate), categorical ones as integer codes.
        categorical: ``k`` flags.

    Returns:
        ``(pairs (m(m-1)/2, 2) long, treatment (m(m-1)/2, k) float64)``, pairs ``i < j`` in row-major order.
    """
    m, k = hyperparameters.shape
    if len(categorical) != k:
        raise ValueError(f"categorical needs one flag per column ({k}), got {len(categorical)}")
    pairs = torch.triu_indices(m, m, offset=1).T
    h = hyperparameters.double()
    difference = (h[pairs[:, 0]] - h[pairs[:, 1]]).abs()
    flags = torch.tensor(list(categorical), dtype=torch.bool)
    difference[:, flags] = (difference[:, flags] > 0).double()
    return pairs, difference


def pairwise_mediation(
    hyperparameters: Tensor, categorical: Sequence[bool], mediator_distance: Tensor, outcome_distance: Tensor
) -> MediationResult:
    """:func:`linear_mediation` on every pair of ``m`` units (see the module docstring).

    Args:
        hyperparameters: ``(m, k)`` treatments per unit (see :func:`pair_treatments`).
        categorical: ``k`` flags.
        mediator_distance: ``(m, m)`` symmetric distances between the units' mediators (predictions).
        outcome_distance: ``(m, m)`` symmetric distances between the units' outcomes (explanations).
    """
    m = hyperparameters.shape[0]
    for name, matrix in (("mediator_distance", mediator_distance), ("outcome_distance", outcome_distance)):
        if matrix.shape != (m, m):
            raise ValueError(f"{name} must be ({m}, {m}) for {m} units, got {tuple(matrix.shape)}")
    pairs, treatment = pair_treatments(hyperparameters, categorical)
    i, j = pairs[:, 0], pairs[:, 1]
    return linear_mediation(treatment, mediator_distance[i, j], outcome_distance[i, j])


def bootstrap_pairwise_mediation(
    hyperparameters: Tensor,
    categorical: Sequence[bool],
    mediator_distance: Tensor,
    outcome_distance: Tensor,
    num_resamples: int = 200,
    generator: torch.Generator | None = None,
) -> list[MediationResult]:
    """:func:`pairwise_mediation` on ``num_resamples`` bootstrap samples of the units.

    Pairs share units, so they are not independent: the units (models) are resampled with replacement, and a pair of
    two copies of one unit (distance 0 by construction, not a comparison) is left out.

    Returns:
        One :class:`MediationResult` per resample (take percentiles of any field for an interval).
    """
    m = hyperparameters.shape[0]
    results = []
    for _ in range(num_resamples):
        draw = torch.randint(m, (m,), generator=generator)
        pairs, treatment = pair_treatments(hyperparameters[draw], categorical)
        i, j = draw[pairs[:, 0]], draw[pairs[:, 1]]
        distinct = i != j
        results.append(
            linear_mediation(
                treatment[distinct], mediator_distance[i, j][distinct], outcome_distance[i, j][distinct]
            )
        )
    return results


def mean_total_variation(probabilities: Tensor) -> Tensor:
    """``(m, m)`` mean over inputs of the total-variation distance between the units' predicted class distributions.

    Args:
        probabilities: ``(m, P, C)`` each unit's class probabilities on the same ``P`` inputs.

    Returns:
        Distances in ``[0, 1]`` (0: identical predictions; 1: disjoint supports), float64.
    """
    if probabilities.dim() != 3:
        raise ValueError(f"probabilities must be (units, inputs, classes), got {tuple(probabilities.shape)}")
    p = probabilities.double()
    return 0.5 * (p.unsqueeze(1) - p.unsqueeze(0)).abs().sum(-1).mean(-1)


def mean_cosine_distance(explanations: Tensor, eps: float = 1e-12) -> Tensor:
    """``(m, m)`` mean over inputs of ``1 - cos`` between the units' explanations of the same input.

    Cosine ignores each map's scale (gradients of a confident model are larger, not more different) and keeps its
    signs and their pattern.

    Args:
        explanations: ``(m, P, d)`` each unit's values of ``d`` players on the same ``P`` inputs.
        eps: floor of the norms, so an all-zero map is at distance 1 from every map rather than NaN.

    Returns:
        Distances in ``[0, 2]`` (0: proportional maps; 2: opposite maps), float64.
    """
    if explanations.dim() != 3:
        raise ValueError(f"explanations must be (units, inputs, players), got {tuple(explanations.shape)}")
    e = explanations.double()
    unit = e / e.norm(dim=-1, keepdim=True).clamp_min(eps)
    cosine = torch.einsum("ipd,jpd->ijp", unit, unit)
    return (1.0 - cosine).mean(-1)
