"""Convergent KernelSHAP (Covert & Lee, "Improving KernelSHAP: Practical Shapley Value Estimation via Linear
Regression", AISTATS 2021) and Leverage SHAP (Musco & Witter, ICLR 2025) on any coalitional game.

Coalitions are sampled (:mod:`lit_xai.sampling`), the constrained regression and its standard errors come from
:mod:`lit_xai.kernel_shap_variance`, and every input of a batched game stops on its own. :mod:`lit_xai.shapley`
re-exports :func:`kernel_shap` beside exact enumeration and :func:`~lit_xai.shapley.shapley_values`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_xai.games import Game, check_num_players, evaluate_game, restrict_inputs, result_dtype
from lit_xai.kernel_shap_variance import BatchMeans, Moments, constrained_solve, std_ratio
from lit_xai.sampling import LeverageSampler, ShapleySampler

__all__ = ["KernelShapResult", "kernel_shap"]


@dataclass
class KernelShapResult:
    """What :func:`kernel_shap` returns.

    Attributes:
        values: Shapley value estimates ``(d, C)`` or ``(B, d, C)``; exactly efficient
            (``values.sum(-2) == v(all) - v(∅)``).
        std: estimated standard deviation of each estimate, same shape; NaN until enough samples were drawn
            for a variance estimate (``variance_groups`` groups).
        num_evaluations: coalitions evaluated for the input that ran longest, the empty and full coalition included.
        evaluations: coalitions evaluated per input, ``()`` or ``(B,)``: each input stops on its own.
        converged: whether every input met the stopping rule before the evaluation cap.
        ratio: ``max_c max_i std / (max_i φ - min_i φ)`` per input, ``()`` or ``(B,)`` (inf before a std exists).
        trajectory: ``(num_evaluations, values)`` after every batch, when asked for (an input that has stopped
            keeps its final values).
    """

    values: Tensor
    std: Tensor
    num_evaluations: int
    converged: bool
    ratio: Tensor
    evaluations: Tensor
    trajectory: list[tuple[int, Tensor]] = field(default_factory=list)


def kernel_shap(
    game: Game,
    num_players: int,
    *,
    batch_size: int = 512,
    paired: bool = True,
    threshold: float | None = 0.01,
    max_evaluations: int = 100_000,
    min_evaluations: int = 0,
    variance_groups: int = 32,
    sampler: str = "kernel",
    return_trajectory: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> KernelShapResult:
    """Shapley values estimated by KernelSHAP with paired sampling and convergence detection (Covert & Lee, 2021).

    Coalitions are drawn from the Shapley kernel with exact cardinality; ``A = E[z zᵀ]`` and
    ``b = E[z (v(z) - v(∅))]`` are accumulated in float64 (with pairs, the pair's average is one sample) and the
    equality-constrained least-squares problem is solved in closed form after every batch, so efficiency holds
    exactly at every step. The standard deviation of every value is estimated by the delta method over batch
    means (:class:`~lit_xai.kernel_shap_variance.BatchMeans`), available as soon as the coalitions identify every
    player. Each input stops on its own as soon as ``ratio = max std / (max φ - min φ) < threshold`` over all its outputs (its values are then
    frozen, and a game with a ``subset(rows)`` method, such as :class:`~lit_xai.games.ModelGame`, stops evaluating it), or at the
    cap. Inputs share the sampled coalitions, so an input's result is the same alone or in a batch.
    ``v(∅)`` and ``v(all)`` are evaluated once.

    With ``sampler="leverage"`` the coalitions are Leverage SHAP's (Musco & Witter, ICLR 2025): a plan for the whole
    budget ``max_evaluations`` is drawn first (sizes uniform, subsets uniform within a size, paired, without
    replacement, so small and large sizes are enumerated completely once the budget allows), each row re-weighted
    to the Shapley kernel (:class:`~lit_xai.sampling.LeverageSampler`), and solved by the same constrained
    regression, exactly efficient. It is a fixed-budget estimator: pass ``threshold=None``. Batch means do not
    describe a stratified sample drawn without replacement (measured: errors 1.5 times the std they gave, when
    stopped early), so no std is reported (NaN), except when every coalition was evaluated: then the values are
    exact, with std 0.

    Args:
        game: maps a keep-mask ``(N, d)`` to values ``(N, C)`` or ``(B, N, C)`` (all inputs share coalitions).
        num_players: number of players ``d``.
        batch_size: coalitions evaluated per step (even when ``paired``); the stopping rule is checked after
            every step.
        paired: sample each coalition together with its complement (variance reduction).
        threshold: stop when the std ratio falls below it; ``None`` runs to ``max_evaluations``.
        max_evaluations: cap on coalitions evaluated per input (the empty and full coalition included).
        min_evaluations: do not stop an input before this many evaluations.
        variance_groups: batch means kept for the variance (between this and twice this); a std is reported once
            this many groups exist.
        sampler: ``"kernel"`` (the Shapley kernel, drawn with replacement) or ``"leverage"`` (Leverage SHAP).
        return_trajectory: record ``(num_evaluations, values)`` after every batch.
        generator: random generator for reproducible sampling (coalitions are drawn on its device).
        progress: show a progress bar (evaluations, inputs still running, their worst std ratio).

    Returns:
        A :class:`KernelShapResult`; ``values`` has shape ``(d, C)`` or ``(B, d, C)``.

    Example:
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> game = lambda keep: (keep.double() @ w.double()).unsqueeze(-1)  # additive: v(S) = Σ_{i∈S} w_i
        >>> result = kernel_shap(game, 3, generator=torch.Generator().manual_seed(0))
        >>> [round(value, 9) for value in result.values.squeeze(-1).tolist()], result.converged
        ([1.0, -2.0, 0.5], True)
    """
    d = check_num_players(num_players)
    step = 2 if paired else 1
    if threshold is not None and not threshold > 0:
        raise ValueError(
            f"threshold must be positive (e.g. 0.01), or None to run to max_evaluations; got {threshold}"
        )
    if batch_size < 1 or batch_size % step:
        raise ValueError(
            f"batch_size must be a positive{' even' if paired else ''} number of coalitions, got {batch_size}"
        )
    if max_evaluations < 2 + step or min_evaluations > max_evaluations:
        raise ValueError(
            f"need 2 + {step} <= max_evaluations and min_evaluations <= max_evaluations, "
            f"got min_evaluations={min_evaluations}, max_evaluations={max_evaluations}"
        )
    if variance_groups < 2:
        raise ValueError(f"variance_groups must be at least 2, got {variance_groups}")
    if sampler not in ("kernel", "leverage"):
        raise ValueError(
            f"unknown sampler {sampler!r}; choose 'kernel' (KernelSHAP) or 'leverage' (Leverage SHAP)"
        )
    if sampler == "leverage" and threshold is not None:
        raise ValueError(
            "Leverage SHAP samples a plan for a fixed budget and has no stopping rule: pass threshold=None and set "
            "the budget with max_evaluations"
        )
    device = getattr(game, "device", None)

    ends = torch.stack([torch.zeros(d, dtype=torch.bool), torch.ones(d, dtype=torch.bool)])
    v_ends, single = evaluate_game(game, ends.to(device))
    dtype, out_device = result_dtype(v_ends), v_ends.device
    v_null, delta = v_ends[:, 0].double(), v_ends[:, 1].double() - v_ends[:, 0].double()
    shape = (v_ends.shape[0], d, v_ends.shape[2])
    # Final answers per input, filled in as inputs stop; `active` are the inputs still being sampled.
    phi_out = torch.full(shape, float("nan"), dtype=torch.float64, device=out_device)
    std_out = torch.full_like(phi_out, float("nan"))
    ratio_out = torch.full((shape[0],), torch.inf, dtype=torch.float64, device=out_device)
    evaluations_out = torch.full((shape[0],), 2, dtype=torch.long)
    active = torch.arange(shape[0], device=out_device)
    trajectory: list[tuple[int, Tensor]] = []

    def result(converged: bool) -> KernelShapResult:
        phi, std, ratio, used = phi_out.to(dtype), std_out.to(dtype), ratio_out, evaluations_out
        if single:
            phi, std, ratio, used = phi[0], std[0], ratio[0], used[0]
        return KernelShapResult(phi, std, int(evaluations_out.max()), converged, ratio, used, trajectory)

    def record(n_eval: int) -> None:
        if return_trajectory:
            trajectory.append((n_eval, (phi_out[0] if single else phi_out).to(dtype).clone()))

    if d == 1:  # one player takes everything
        phi_out, std_out, ratio_out = (
            delta.unsqueeze(1),
            torch.zeros_like(phi_out),
            torch.zeros_like(ratio_out),
        )
        record(2)
        return result(True)

    whole_game, plan, importance, drawn = game, None, None, 0
    if sampler == "leverage":
        leverage = LeverageSampler(d, paired=paired)
        budget = min(max_evaluations - 2, leverage.max_rows()) // step * step
        plan, plan_weights = leverage.sample(budget, generator=generator)
    else:
        kernel_sampler = ShapleySampler(d, paired=paired)
    weight = 1.0 / step  # a pair is one sample: each half counts 1/2
    total, spread = Moments(*shape, out_device), BatchMeans(shape, out_device, variance_groups)
    evaluations, identified = 2, False
    bar = _progress_bar(max_evaluations, shape[0]) if progress else None
    cap = max_evaluations if plan is None else 2 + len(plan)
    while len(active) and (rows := min(batch_size, cap - evaluations) // step * step) > 0:
        if plan is None:
            keep = kernel_sampler.sample(rows, generator=generator)
        else:
            keep, importance = plan[drawn : drawn + rows], plan_weights[drawn : drawn + rows].to(out_device)
            drawn += rows
        values, _ = evaluate_game(game, keep.to(device))
        if values.shape[0] != len(active) or values.shape[2] != shape[2]:
            raise ValueError(
                f"the game returned (B, C) = {(values.shape[0], values.shape[2])} after returning "
                f"{(len(active), shape[2])}; a game must keep its inputs and outputs fixed"
            )
        evaluations += rows
        evaluations_out[active.cpu()] = evaluations
        z = keep.to(device=out_device, dtype=torch.float64)
        gains = values.double() - v_null[active].unsqueeze(1)
        total.add(z, gains, weight, importance)
        if plan is None:
            spread.add(z, gains, weight)
        solved = constrained_solve(total.a / total.n, total.b / total.n, delta[active])
        if solved is None:
            continue
        identified = True
        phi, projector = solved
        std = spread.std(phi, projector, total.n) if plan is None else torch.full_like(phi, float("nan"))
        ratio = std_ratio(phi, std)
        phi_out[active], std_out[active], ratio_out[active] = phi, std, ratio
        record(evaluations)
        if bar is not None:
            bar.update(evaluations - bar.n)
            bar.set_postfix(running=len(active), worst_ratio=f"{float(ratio.max()):.3g}")
        if threshold is None or evaluations < min_evaluations:
            continue
        running = ~(ratio < threshold)
        if bool(running.all()):
            continue
        active, rows_left = active[running], running.nonzero().squeeze(1)
        if len(active) == 0:
            break
        total.keep_inputs(rows_left)
        spread.keep_inputs(rows_left)
        subset = getattr(game, "subset", None)
        if subset is not None:
            game = subset(rows_left.to(device))
        else:  # a plain callable keeps returning every input: drop the stopped ones from its answers
            game = restrict_inputs(whole_game, active)

    if bar is not None:
        bar.close()
    enumerated = plan is not None and drawn == len(plan) == leverage.max_rows()
    if enumerated:
        # Every coalition was evaluated: the stratified moments are the exact ones, and so are the values.
        std_out[active], ratio_out[active] = 0.0, 0.0
    if not identified:
        raise ValueError(
            f"KernelSHAP could not identify all {d} players' values from {evaluations} evaluations "
            f"(the sampled coalitions do not determine them yet); raise max_evaluations"
        )
    converged = bool((ratio_out < threshold).all()) if threshold is not None else enumerated
    if threshold is not None and not converged:
        warnings.warn(
            f"KernelSHAP reached max_evaluations={max_evaluations} before converging (std ratio "
            f"{float(ratio_out.max()):.3g} >= threshold {threshold}); raise max_evaluations or the threshold",
            stacklevel=2,
        )
    return result(converged)


def _progress_bar(total: int, inputs: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"KernelSHAP ({inputs} inputs)", unit="eval", smoothing=0.1)
