"""Completeness and soundness of saliency maps (Gupta, Saunshi, Yu, Lyu & Arora, "New Definitions and Evaluations
for Saliency Methods: Staying Intrinsic, Complete and Sound", NeurIPS 2022, arXiv 2211.02912).

A map for label ``a`` is read as a *certificate*: keeping the players it ranks high (the rest removed by the masker)
should give the network about as much evidence for ``a`` as the whole input does. With ``p_a`` the probability of
``a`` on the full input and ``q_a`` its evidence on the masked input,

- completeness ``c_a = min(max(eps, q_a) / min(alpha, p_a), 1)``: the mask keeps (nearly) all of the evidence;
  masked-input evaluations (insertion, sufficiency) only ever measure this;
- soundness ``s_a = min(max(beta, p_a) / q_a, 1)``: the mask does not *create* evidence the network does not see in
  the input. A method that can produce a convincing mask for any label (an adversarial certificate) is complete
  but not sound; soundness is scored on the labels the network does *not* predict.

The ratios and their floors (``eps = beta = 0.1``, ``alpha = 1``) are those of the authors' evaluation code
(github.com/agup/soundness_saliency: ``completeness``/``soundness`` in ``utils.py``). As there,
the probabilities are a softmax over the evaluated labels only, and ``q_a`` is either

- ``"insertion"``: the area under the insertion curve of map ``a`` (players added most-important first; the
  authors' evaluation of real-valued maps), or
- ``"soft"``: the probability on the input blended with the baseline by the map itself, read as a keep-fraction in
  ``[0, 1]`` per player (the paper's optimised masks; only :class:`~lit_xai.masking.BaselineFill` has this path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import preserved_model_state
from lit_xai.masking import BaselineFill, Masker
from lit_xai.metrics.functional._utils import check_target, coalition_values, rank_players
from lit_xai.metrics.functional.insertion_deletion import player_counts

__all__ = ["completeness_soundness", "completeness_ratio", "soundness_ratio", "MODES"]

MODES = ("insertion", "soft")


def completeness_ratio(
    evidence: Tensor, probability: Tensor, epsilon: float = 0.1, alpha: float = 1.0
) -> Tensor:
    """``min(max(eps, q) / min(alpha, p), 1)``: how much of the input's evidence ``p`` the mask's ``q`` keeps."""
    return (evidence.clamp_min(epsilon) / probability.clamp(max=alpha).clamp_min(1e-12)).clamp(max=1.0)


def soundness_ratio(evidence: Tensor, probability: Tensor, beta: float = 0.1) -> Tensor:
    """``min(max(beta, p) / q, 1)``: 1 unless the mask shows more evidence ``q`` than the input's ``p``."""
    # q = 0 claims nothing, so it is sound; dividing would give inf (clamped to 1) or nan for 0 / 0.
    ratio = probability.clamp_min(beta) / evidence.clamp_min(1e-12)
    return ratio.clamp(max=1.0)


def completeness_soundness(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    maps: Tensor,
    target: Tensor | int | None = None,
    labels: Sequence[int] | Tensor | None = None,
    mode: str = "insertion",
    num_steps: int | None = None,
    epsilon: float = 0.1,
    alpha: float = 1.0,
    beta: float = 0.1,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Completeness of the map for the explained label and soundness of the maps for every other label.

    Args:
        model: the network (its mode is left as it is).
        masker: removes players; ``mode="soft"`` needs a :class:`~lit_xai.masking.BaselineFill`.
        x: inputs ``(B, ...)``.
        maps: ``(B, d, K)``, one map per evaluated label (what ``attribute(x, target=None)`` returns for
            ``K = C``); with ``mode="soft"``, keep-fractions in ``[0, 1]``.
        target: ``(B,)`` (or one int) class indices whose completeness is reported, each among ``labels``;
            ``None``: the predicted label (as in the paper).
        labels: the ``K`` class indices the maps explain (default ``0..K-1``); the probabilities are a softmax
            over these classes only.
        mode: ``"insertion"`` or ``"soft"`` (see the module docstring).
        num_steps: points of the insertion curves (``None``: every player count).
        epsilon, alpha: completeness floors; beta: soundness floor.
        batch_size: masked inputs per forward pass.
        generator: breaks ties between equal map values (insertion mode).

    Returns:
        ``completeness`` ``(B,)`` of the target's map; ``soundness`` ``(B,)``, the mean over the other labels;
        ``worst_soundness`` ``(B,)``, their minimum; and ``(B, K)`` tensors ``evidence`` (``q``),
        ``probability`` (``p``), ``completeness_per_label`` and ``soundness_per_label``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "soft" and not isinstance(masker, BaselineFill):
        raise ValueError(
            f"mode='soft' blends players with a baseline, which only BaselineFill can do; got {type(masker).__name__} "
            f"(use mode='insertion')"
        )
    batch, d = x.shape[0], masker.num_players
    if maps.dim() != 3 or maps.shape[:2] != (batch, d):
        raise ValueError(
            f"maps must be (batch, players, labels) = ({batch}, {d}, K), one map per label; got {tuple(maps.shape)}"
        )
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    num_labels = maps.shape[2]
    if num_labels < 2:
        raise ValueError("soundness needs maps for at least two labels")
    labels = torch.arange(num_labels) if labels is None else torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (num_labels,) or labels.unique().numel() != num_labels:
        raise ValueError(
            f"labels must be {num_labels} distinct class indices, one per map; got {labels.tolist()}"
        )
    labels = labels.to(x.device)
    maps = maps.detach().to(x.device)

    def link(logits: Tensor) -> Tensor:  # the paper's reduced model: a softmax over the evaluated labels only
        if int(labels.max()) >= logits.shape[1]:
            raise ValueError(
                f"labels go up to {int(labels.max())} but the model gives {logits.shape[1]} outputs"
            )
        return logits[:, labels].softmax(-1)

    with torch.no_grad(), preserved_model_state(model):
        everyone = torch.ones(batch, d, dtype=torch.bool, device=x.device)
        probability = link(masker(model, x, everyone)).float()
    position = _target_positions(target, labels, probability)

    evidence = torch.empty(batch, num_labels, device=x.device)
    for k in range(num_labels):
        column = torch.full((batch,), k, dtype=torch.long, device=x.device)
        if mode == "soft":
            with torch.no_grad(), preserved_model_state(model):
                evidence[:, k] = link(masker.fill_soft(model, x, maps[:, :, k])).float()[:, k]
        else:
            evidence[:, k] = _insertion_auc(
                model, masker, x, maps[:, :, k], column, link, num_steps, batch_size, generator
            )

    complete = completeness_ratio(evidence, probability, epsilon, alpha)
    sound = soundness_ratio(evidence, probability, beta)
    others = torch.ones_like(sound, dtype=torch.bool).scatter(1, position.unsqueeze(1), False)
    rows = torch.arange(batch, device=x.device)
    return {
        "completeness": complete[rows, position],
        "soundness": (sound * others).sum(1) / others.sum(1),
        "worst_soundness": sound.masked_fill(~others, float("inf")).amin(1),
        "evidence": evidence,
        "probability": probability,
        "completeness_per_label": complete,
        "soundness_per_label": sound,
    }


def _target_positions(target: Tensor | int | None, labels: Tensor, probability: Tensor) -> Tensor:
    """The column of each image's explained label among ``labels``: ``(B,)``."""
    batch = probability.shape[0]
    if target is None:
        return probability.argmax(1)
    target = check_target(target, batch, labels.device)
    match = target.unsqueeze(1) == labels.unsqueeze(0)
    if not bool(match.any(1).all()):
        raise ValueError(f"every target must be one of the evaluated labels {labels.tolist()}")
    return match.float().argmax(1)


def _insertion_auc(
    model: nn.Module,
    masker: Masker,
    x: Tensor,
    scores: Tensor,
    column: Tensor,
    link,
    num_steps: int | None,
    batch_size: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Trapezoidal mean of the insertion curve of ``scores`` ``(B, d)``, read at ``column`` of ``link``: ``(B,)``."""
    batch, d = scores.shape
    counts = player_counts(d, num_steps, device=x.device)
    inserted = rank_players(scores, generator).unsqueeze(1) < counts.view(1, -1, 1)  # (B, S+1, d)
    image_index = torch.arange(batch, device=x.device).repeat_interleave(counts.numel())
    values = coalition_values(
        model, masker, x, inserted.flatten(0, 1), image_index, column, link=link, batch_size=batch_size
    )
    return torch.trapezoid(values.view(batch, -1), counts.float() / d, dim=1)
