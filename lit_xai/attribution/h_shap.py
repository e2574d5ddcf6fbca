"""h-Shap: hierarchical Shapley values over a quadtree of patches (Teneggi, Luster & Sulam, "Fast Hierarchical Games
for Image Explanations", TPAMI 2022).

The image's grid of patches (:class:`~lit_xai.players.PatchGrid`) is split into four quadrants; the quadrants play an
exact 4-player game (16 coalitions, everything outside the node removed through the masker) and those whose Shapley
value exceeds a threshold are split again, down to single patches. A patch's value is the product of the scores
along its path from the root, and patches in pruned branches get zero. When the evidence for the class sits in a few
places, only the branches leading there are explored: ``16 × (expanded nodes)`` evaluations instead of the
exponential or quadratic cost of flat estimators, with an exact game at every level. Thresholds as the authors':
absolute (keep scores ``> t``, default ``t = 0``) or relative (keep scores at or above the level's ``p``-th
percentile). Grid sides need not be powers of two: a side of one cell is not split, so a node may have 2 or 1
children (a game of 2^k coalitions for k children).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import resolve_target
from lit_xai.attribution.perturbation import PerturbationAttribution
from lit_xai.games import enumerate_coalitions
from lit_xai.players import PatchGrid, Players
from lit_xai.shapley import exact_shapley

__all__ = ["HShap"]

Node = tuple[int, int, int, int]  # rows [r0, r1), columns [c0, c1) of grid cells


def _children(node: Node) -> list[Node]:
    r0, r1, c0, c1 = node
    rows = [(r0, r1)] if r1 - r0 == 1 else [(r0, (r0 + r1 + 1) // 2), ((r0 + r1 + 1) // 2, r1)]
    cols = [(c0, c1)] if c1 - c0 == 1 else [(c0, (c0 + c1 + 1) // 2), ((c0 + c1 + 1) // 2, c1)]
    return [(a, b, c, e) for a, b in rows for c, e in cols]


@lru_cache(maxsize=4)
def _shapley_coefficients(num_children: int) -> Tensor:
    """``(2^k, k)``: Shapley value of child ``j`` = ``Σ_S coef[S, j] v(S)`` with coalitions in binary order."""
    identity = torch.eye(2**num_children, dtype=torch.float64)
    bits = 1 << torch.arange(num_children)
    # The game whose output c is 1 on coalition c alone: its Shapley values are the coefficients of coalition c.
    return exact_shapley(lambda keep: identity[(keep.long() * bits).sum(1)], num_children).T


class HShap(PerturbationAttribution):
    """h-Shap values per patch, ``(B, d)`` (``(B, d, C)`` from :meth:`attribute_all`: one tree per class).

    Args:
        model: the network to explain.
        players: a :class:`~lit_xai.players.PatchGrid`.
        masker: ``masker(model, x, keep) -> logits`` (required); removed patches are the reference (the authors use
            the mean training image: ``BaselineFill(players, fill="mean", mean=...)``).
        threshold: absolute mode: children with a score above it are explored (the authors' ``t = 0``).
        percentile: relative mode instead: children at or above this percentile of their level's scores (the
            authors use 70).
        link: scale of the values (``"softmax"`` by default, as the authors).
        batch_size: at most this many masked inputs per forward pass.

    ``last_evaluations`` holds the coalitions evaluated per input (per class for :meth:`attribute_all`) last time.
    """

    name = "h_shap"

    def __init__(
        self,
        model: nn.Module,
        players: Players,
        masker: Callable | None = None,
        threshold: float = 0.0,
        percentile: float | None = None,
        link: str | Callable[[Tensor], Tensor] = "softmax",
        batch_size: int = 256,
    ) -> None:
        if not isinstance(players, PatchGrid):
            raise ValueError(
                f"h-Shap splits a grid of patches into quadrants: players must be a PatchGrid, got {players!r}"
            )
        super().__init__(model, players, masker, link=link, batch_size=batch_size)
        if percentile is not None and not 0 <= percentile <= 100:
            raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
        self.threshold, self.percentile = float(threshold), percentile
        self.last_evaluations: Tensor | None = None

    def _cells(self, node: Node) -> Tensor:
        """Player indices of the node's cells."""
        r0, r1, c0, c1 = node
        gw = self.players.grid_size[1]
        rows, cols = torch.arange(r0, r1), torch.arange(c0, c1)
        return (rows.view(-1, 1) * gw + cols.view(1, -1)).flatten()

    def _tree(self, x: Tensor, target: int) -> tuple[Tensor, int]:
        """One input ``(1, ...)``, one class: the values ``(d,)`` and the coalitions evaluated."""
        d = self.players.num_players
        gh, gw = self.players.grid_size
        values = torch.zeros(d, dtype=torch.float64)
        level: list[tuple[Node, float]] = [((0, gh, 0, gw), 1.0)]
        evaluations = 0
        while level:
            masks, spans = [], []
            for node, _ in level:
                children = _children(node)
                coalitions = enumerate_coalitions(0, 2 ** len(children), len(children), None)  # (2^k, k)
                keep = torch.zeros(len(coalitions), d, dtype=torch.bool)
                for j, child in enumerate(children):
                    keep[:, self._cells(child)] = coalitions[:, j : j + 1]
                masks.append(keep)
                spans.append(children)
            all_masks = torch.cat(masks).to(x.device)
            outputs = self._outputs(x, all_masks)[0, :, target].double().cpu()
            evaluations += all_masks.shape[0]
            scored: list[tuple[Node, float]] = []
            start = 0
            for (_, score), children in zip(level, spans):
                size = 2 ** len(children)
                shapley = _shapley_coefficients(len(children)).T @ outputs[start : start + size]
                start += size
                scored += [(child, score * float(s), float(s)) for child, s in zip(children, shapley)]
            own = torch.tensor([s for _, _, s in scored], dtype=torch.float64)
            if self.percentile is None:
                keep_child = own > self.threshold
            else:
                cut = torch.quantile(own, self.percentile / 100)
                # at or above the percentile; a non-positive cut keeps only positive scores, as the authors
                keep_child = own >= cut if cut > 0 else own > cut
            level = []
            for (child, path_score, _), kept in zip(scored, keep_child.tolist()):
                if not kept:
                    continue
                if child[1] - child[0] == 1 and child[3] - child[2] == 1:
                    values[self._cells(child)] = path_score
                else:
                    level.append((child, path_score))
        return values, evaluations

    def _explain(self, x: Tensor, targets: Tensor) -> Tensor:
        """``(B, d)`` for one class per input."""
        results, evaluations = [], []
        for b in range(x.shape[0]):
            values, used = self._tree(x[b : b + 1], int(targets[b]))
            results.append(values)
            evaluations.append(used)
        self.last_evaluations = torch.tensor(evaluations)
        return torch.stack(results).to(x.dtype if x.is_floating_point() else torch.get_default_dtype())

    def _all_classes(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            everyone = torch.ones(1, self.players.num_players, dtype=torch.bool, device=x.device)
            num_classes = self.masker(self.model, x[:1], everyone).shape[-1]
        per_class, used = [], []
        for c in range(num_classes):
            per_class.append(self._explain(x, torch.full((x.shape[0],), c)))
            used.append(self.last_evaluations)
        self.last_evaluations = torch.stack(used, dim=1)
        return torch.stack(per_class, dim=-1)

    def _attribute(self, x: Tensor, target: Tensor | int | None) -> Tensor:
        with torch.no_grad():
            everyone = torch.ones(x.shape[0], self.players.num_players, dtype=torch.bool, device=x.device)
            target = resolve_target(target, x.shape[0], self.masker(self.model, x, everyone))
            return self._explain(x, target.cpu())
