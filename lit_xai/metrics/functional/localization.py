"""Localisation: does an explanation point at the region a human annotated?

Three scores, each per image, on pixel maps ``(B, H, W)`` or player maps ``(B, d)`` alike (both are flattened to
``(B, n)``). Per-player attributions are compared with a pixel annotation by repeating each player's value over its
pixels (``players.upsample``), so a patch that straddles the annotation earns partial credit.

- **Pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016): is the
  maximum of the map inside the annotation? With ties, the score is the fraction of the tied maxima inside.
- **Relevance mass accuracy** (Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 2022): the positive attribution
  mass inside the annotation divided by the total positive mass.
- **Effective heat ratio AUC** (Zhang et al., "Fine-grained neural network explanation by identifying input features
  with predictive information" (InputIBA), NeurIPS 2021). The definition implemented, following the authors'
  evaluation code, for each image:

  1. ``heat = (a - min a) / (max a - min a)`` (min-max normalisation, as InputIBA's saved heat maps; a constant map
     has no heat anywhere);
  2. pixels with ``heat < base_threshold`` (0.1) are set to zero; the remaining pixels are the points of interest;
  3. for ``q`` in 11 evenly spaced quantile levels ``0, 0.1, ..., 1``: the threshold ``t_q`` is the ``q``-quantile
     (linear interpolation between order statistics, NumPy's default; a level that falls on an order statistic
     gives exactly that value) of the heat of the points of interest, capped at ``0.99 * max heat``;
  4. ``EHR(q) = (sum of heat over pixels with heat >= t_q inside the annotation) / (number of pixels with heat >=
     t_q)``, the mean "effective" heat per selected pixel;
  5. the score is the trapezoidal area under ``EHR(q)`` over ``q`` in ``[0, 1]``.

  It rewards maps whose strong heat concentrates inside the annotation: in ``[0, 1]``, 1 only for a map whose
  selected pixels all lie in the annotation with heat 1.

The annotation is binarised as ``annotation >= threshold``. An image with an empty annotation scores 0 on every
metric (filter such images out if they should not count).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_xai.metrics.functional._utils import check_finite, flatten_maps
from lit_xai.players import Players

__all__ = [
    "localization",
    "pointing_game",
    "relevance_mass_accuracy",
    "effective_heat_ratio",
    "prepare_localization",
]


def prepare_localization(
    attributions: Tensor, annotation: Tensor, players: Players | None = None, threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Bring an attribution map and an annotation to the same layout.

    Args:
        attributions: ``(B, d)`` per-player values or ``(B, H, W)`` / ``(B, F)`` per-pixel/per-column values.
        annotation: ``(B, H, W)``, ``(B, F)`` or ``(B, d)`` human importance in ``[0, 1]``.
        players: needed when ``attributions`` are per player and ``annotation`` per pixel (or per column): each
            player's value is repeated over its pixels.
        threshold: annotation values ``>= threshold`` form the region.

    Returns:
        ``(maps, region)``: float ``(B, n)`` values and bool ``(B, n)`` region.
    """
    if not isinstance(annotation, Tensor) or not isinstance(attributions, Tensor):
        raise ValueError("attributions and annotation must be torch tensors")
    if (
        players is not None
        and attributions.dim() == 2
        and attributions.shape[1] == players.num_players
        and annotation.shape[1:] != attributions.shape[1:]
    ):
        attributions = players.upsample(attributions.detach())
    maps = flatten_maps(attributions, "attributions").float()
    region = flatten_maps(annotation, "annotation").to(maps.device) >= threshold
    if maps.shape != region.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and annotation {tuple(annotation.shape)} do not line up: pass "
            f"players=<PatchGrid/FeatureGroups> to spread per-player attributions over pixels, or pool the annotation "
            f"to players with players.pool(annotation, reduce='mean')"
        )
    check_finite(maps, "attributions")
    return maps, region


def pointing_game(maps: Tensor, region: Tensor) -> Tensor:
    """``(B,)`` fraction of each map's maximal entries that lie in the region (1 or 0 without ties)."""
    is_max = maps >= maps.amax(dim=1, keepdim=True)
    return (is_max & region).sum(dim=1).float() / is_max.sum(dim=1).float()


def relevance_mass_accuracy(maps: Tensor, region: Tensor) -> Tensor:
    """``(B,)`` positive mass inside the region / total positive mass (0 for a map with no positive mass)."""
    positive = maps.clamp_min(0)
    total = positive.sum(dim=1)
    inside = (positive * region).sum(dim=1)
    return torch.where(
        total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total)
    )


def _interior_quantiles(sorted_values: Tensor, counts: Tensor, levels: Tensor) -> Tensor:
    """Linear-interpolation quantiles of the first ``counts[b]`` entries of each ascending row: ``(B, Q)``."""
    position = levels.view(1, -1) * (counts.view(-1, 1) - 1).clamp_min(0).to(levels.dtype)
    # A level that falls on an order statistic must give exactly that value, so that the pixel holding it is
    # selected (heat >= threshold); without snapping, float round-off (0.7 * 50 = 35.000000000000004) decides.
    nearest = position.round()
    position = torch.where((position - nearest).abs() < 1e-6, nearest, position)
    low = position.floor().long()
    high = position.ceil().long()
    v_low = sorted_values.gather(1, low)
    v_high = sorted_values.gather(1, high)
    return v_low + (v_high - v_low) * (position - low.to(position.dtype))


def effective_heat_ratio(
    maps: Tensor, region: Tensor, base_threshold: float = 0.1, num_quantiles: int = 11
) -> dict[str, Tensor]:
    """Effective heat ratios of InputIBA (see the module docstring for the exact definition).

    Args:
        maps: ``(B, n)`` attribution maps.
        region: ``(B, n)`` bool annotation region.
        base_threshold: normalised heat below which a pixel is ignored.
        num_quantiles: number of quantile levels, evenly spaced in ``[0, 1]`` (11 in InputIBA).

    Returns:
        ``{"auc": (B,), "ratios": (B, Q), "quantiles": (Q,)}``.
    """
    if not 0.0 <= base_threshold < 1.0:
        raise ValueError(
            f"base_threshold must lie in [0, 1) (heat is normalised to [0, 1]), got {base_threshold}"
        )
    if num_quantiles < 2:
        raise ValueError(f"num_quantiles must be at least 2 to integrate a curve, got {num_quantiles}")
    low = maps.amin(dim=1, keepdim=True)
    spread = maps.amax(dim=1, keepdim=True) - low
    heat = torch.where(
        spread > 0, (maps - low) / spread.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps)
    )
    interest = heat >= base_threshold
    heat = heat * interest

    levels = torch.linspace(0.0, 1.0, num_quantiles, device=maps.device, dtype=maps.dtype)
    # Points of interest first, in ascending order (the others pushed to the end as +inf).
    ordered = torch.where(interest, heat, torch.full_like(heat, float("inf"))).sort(dim=1).values
    count = interest.sum(dim=1)
    thresholds = _interior_quantiles(ordered, count, levels)
    thresholds = torch.minimum(thresholds, 0.99 * heat.amax(dim=1, keepdim=True))
    thresholds = torch.where(count.view(-1, 1) > 0, thresholds, torch.full_like(thresholds, float("inf")))

    weighted = heat * region
    ratios = []
    for q in range(num_quantiles):  # a loop over 11 levels keeps memory at (B, n) for large pixel maps
        selected = heat >= thresholds[:, q : q + 1]
        ratios.append((weighted * selected).sum(dim=1) / selected.sum(dim=1).clamp_min(1))
    ratios = torch.stack(ratios, dim=1)
    return {"auc": torch.trapezoid(ratios, levels, dim=1), "ratios": ratios, "quantiles": levels}


def localization(
    attributions: Tensor,
    annotation: Tensor,
    players: Players | None = None,
    threshold: float = 0.5,
    base_threshold: float = 0.1,
) -> dict[str, Tensor]:
    """All three localisation scores for a batch.

    Args:
        attributions: ``(B, d)`` per-player or ``(B, H, W)`` / ``(B, F)`` per-pixel attributions.
        annotation: ``(B, H, W)``, ``(B, F)`` or ``(B, d)`` human importance in ``[0, 1]``.
        players: the players of ``attributions`` when they must be spread over a pixel annotation.
        threshold: annotation values ``>= threshold`` form the annotated region.
        base_threshold: the effective heat ratio's lower heat cut-off.

    Returns:
        ``{"pointing_game", "relevance_mass", "ehr_auc"}``, each ``(B,)``.
    """
    maps, region = prepare_localization(attributions, annotation, players, threshold)
    return {
        "pointing_game": pointing_game(maps, region),
        "relevance_mass": relevance_mass_accuracy(maps, region),
        "ehr_auc": effective_heat_ratio(maps, region, base_threshold)["auc"],
    }
