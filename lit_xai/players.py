"""Players: the units an explanation talks about.

Every method in lit_xai asks a model what it predicts when some *players* are missing (Covert, Lundberg & Lee,
"Explaining by Removing", JMLR 2021). A coalition is a boolean keep-mask of shape ``(batch, num_players)``;
``True`` means the player is present. This module maps such masks, and per-player attributions, to the layout of
the input and back:

- :class:`PatchGrid` for images: players are the cells of a regular grid of patches.
- :class:`FeatureGroups` for tabular data: players are columns or groups of columns.
- :class:`~lit_xai.channel_masking.ChannelGroups` inside a network: players are channels of a hidden layer (CNN
  feature maps, ViT embedding dimensions or attention heads), or groups of them, which
  :class:`~lit_xai.channel_masking.ChannelMask` removes; they live with that masker.

All expose the same small protocol (:class:`Players`), so maskers, metrics and explainers never need to know
which kind of data they are looking at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Players",
    "PatchGrid",
    "FeatureGroups",
    "check_keep",
    "as_player_values",
    "is_vit",
    "players_for",
]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return value  # type: ignore[return-value]


def check_keep(keep: Tensor, num_players: int, batch_size: int | None = None, soft: bool = False) -> Tensor:
    """Validate a keep-mask and return it as a bool tensor of shape ``(B, num_players)``.

    With ``soft=True`` fractional masks in ``[0, 1]`` are accepted and returned as floats: how much of each player
    to keep, which only baseline filling can realise (:meth:`lit_xai.masking.BaselineFill.fill_soft`; Sobol
    attribution's perturbations).
    """
    if not isinstance(keep, Tensor):
        raise ValueError(
            f"keep must be a torch.Tensor of shape (batch, {num_players}), got {type(keep).__name__}"
        )
    if keep.dim() != 2 or keep.shape[1] != num_players:
        raise ValueError(
            f"keep must have shape (batch, {num_players}) (one column per player), got {tuple(keep.shape)}"
        )
    if batch_size is not None and keep.shape[0] != batch_size:
        raise ValueError(
            f"keep has {keep.shape[0]} rows but the input batch has {batch_size}; pass one row per input"
        )
    if soft:
        keep = keep.float() if not keep.is_floating_point() else keep
        if not bool(((keep >= 0) & (keep <= 1)).all()):
            raise ValueError(
                "a soft keep-mask must hold fractions in [0, 1] (how much of each player is kept)"
            )
        return keep
    if keep.dtype != torch.bool:
        # Any dtype: a 2 or -1 in an integer mask is as much a mistake as 0.5 in a float one (bool() would read
        # all three as "keep").
        bad = (keep != 0) & (keep != 1)
        if bool(bad.any()):
            other = keep[bad]
            raise ValueError(
                f"keep must be boolean (or 0/1 valued); got {other.numel()} other value(s), e.g. "
                f"{other.flatten()[0].item()!r} (dtype {keep.dtype}); fractional masks are for baseline filling only "
                f"(BaselineFill.fill_soft)"
            )
        keep = keep.bool()
    return keep


@runtime_checkable
class Players(Protocol):
    """What maskers, metrics and explainers need to know about the players of an input."""

    num_players: int

    def expand_mask(self, keep: Tensor, soft: bool = False) -> Tensor:
        """Keep-mask ``(B, d)`` -> float mask broadcastable against the input (``(B, 1, H, W)`` or ``(B, F)``);
        ``soft`` accepts fractions in ``[0, 1]``."""
        ...

    def upsample(self, values: Tensor) -> Tensor:
        """Per-player values ``(B, d)`` or ``(B, d, C)`` -> input layout (``(B, H, W)``/``(B, C, H, W)`` or ``(B, F)``/``(B, F, C)``)."""
        ...

    def pool(self, values: Tensor, reduce: str = "sum") -> Tensor:
        """Values in input layout -> per-player values ``(B, d)`` (image channels are summed first)."""
        ...


class PatchGrid:
    """Players are the patches of a regular grid over an image.

    Args:
        image_size: ``H`` or ``(H, W)`` in pixels.
        patch_size: ``p`` or ``(ph, pw)`` in pixels; must divide ``image_size`` exactly.

    Players are numbered row-major, as ViT patch tokens are: player ``i`` covers rows
    ``(i // gw) * ph ...`` and columns ``(i % gw) * pw ...``.

    Example:
        >>> grid = PatchGrid(8, 4)  # 2 x 2 patches of 4 x 4 pixels
        >>> grid.num_players, grid.upsample(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))[0, ::4, ::4].tolist()
        (4, [[1.0, 2.0], [3.0, 4.0]])
        >>> grid.pool(torch.ones(1, 3, 8, 8)).tolist()  # channels and pixels summed per patch
        [[48.0, 48.0, 48.0, 48.0]]
    """

    def __init__(self, image_size: int | Sequence[int], patch_size: int | Sequence[int]) -> None:
        self.image_size = _pair(image_size, "image_size")
        self.patch_size = _pair(patch_size, "patch_size")
        (h, w), (ph, pw) = self.image_size, self.patch_size
        if h % ph or w % pw:
            raise ValueError(
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}: "
                f"choose a patch size whose sides divide the image's sides (or resize the image)"
            )
        self.grid_size = (h // ph, w // pw)
        self.num_players = self.grid_size[0] * self.grid_size[1]

    def __repr__(self) -> str:
        return f"PatchGrid(image_size={self.image_size}, patch_size={self.patch_size})"

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error if ``x`` is not a batch of images of this grid's size."""
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"expected images of shape (B, C, {self.image_size[0]}, {self.image_size[1]}) for {self!r}, "
                f"got {tuple(x.shape)}; resize the images or build the grid for their size"
            )

    def _to_grid(self, values: Tensor) -> Tensor:
        """(B, d[, C]) -> (B, C', gh, gw) with C' = 1 or C."""
        gh, gw = self.grid_size
        if values.dim() == 2:
            return values.reshape(values.shape[0], 1, gh, gw)
        return values.reshape(values.shape[0], gh, gw, values.shape[2]).permute(0, 3, 1, 2)

    def expand_mask(self, keep: Tensor, soft: bool = False) -> Tensor:
        keep = check_keep(keep, self.num_players, soft=soft)
        grid = self._to_grid(keep if soft else keep.to(torch.float32))
        return grid.repeat_interleave(self.patch_size[0], dim=2).repeat_interleave(self.patch_size[1], dim=3)

    def upsample(self, values: Tensor) -> Tensor:
        if values.dim() not in (2, 3) or values.shape[1] != self.num_players:
            raise ValueError(
                f"attributions must have shape (B, {self.num_players}) or (B, {self.num_players}, C), "
                f"got {tuple(values.shape)}"
            )
        grid = self._to_grid(values)
        pixels = grid.repeat_interleave(self.patch_size[0], dim=2).repeat_interleave(
            self.patch_size[1], dim=3
        )
        return pixels[:, 0] if values.dim() == 2 else pixels

    def pool(self, values: Tensor, reduce: str = "sum") -> Tensor:
        if values.dim() == 3:
            values = values.unsqueeze(1)
        if values.dim() != 4 or tuple(values.shape[-2:]) != self.image_size:
            raise ValueError(
                f"pixel values must have shape (B, H, W) or (B, C, H, W) with (H, W) = {self.image_size}, "
                f"got {tuple(values.shape)}"
            )
        summed = values.sum(dim=1, keepdim=True)
        pooled = F.avg_pool2d(summed, kernel_size=self.patch_size, stride=self.patch_size)
        if reduce == "sum":
            pooled = pooled * (self.patch_size[0] * self.patch_size[1])
        elif reduce != "mean":
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        return pooled.flatten(1)

    def token_keep(self, keep: Tensor, token_grid: tuple[int, int]) -> Tensor:
        """Map a player keep-mask to a keep-mask over a ViT's patch tokens (row-major ``token_grid``).

        Players may be the ViT's own patches or coarser blocks of them (e.g. 2x2 tokens per player).
        """
        gh, gw = self.grid_size
        th, tw = token_grid
        if th % gh or tw % gw:
            raise ValueError(
                f"{self!r} has a {gh}x{gw} grid, which cannot be mapped onto the model's {th}x{tw} token grid: "
                f"each player must cover a whole number of tokens (use the model's patch size or a multiple)"
            )
        grid = keep.reshape(keep.shape[0], gh, gw)
        grid = grid.repeat_interleave(th // gh, dim=1).repeat_interleave(tw // gw, dim=2)
        return grid.reshape(keep.shape[0], th * tw)


class FeatureGroups:
    """Players are tabular columns, or disjoint groups of columns.

    Args:
        num_features: number of columns ``F`` of the input.
        groups: optional list of column-index lists, one per player; every column must appear in exactly one
            group. ``None`` makes every column its own player.
    """

    def __init__(self, num_features: int, groups: Sequence[Sequence[int]] | None = None) -> None:
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = int(num_features)
        if groups is None:
            groups = [[i] for i in range(num_features)]
        flat = sorted(i for g in groups for i in g)
        if flat != list(range(num_features)):
            raise ValueError(
                f"groups must partition the {num_features} columns (each column in exactly one group); "
                f"got {len(flat)} entries covering {len(set(flat))} distinct columns"
            )
        self.groups = [list(map(int, g)) for g in groups]
        self.num_players = len(self.groups)
        membership = torch.zeros(self.num_players, num_features)
        for player, cols in enumerate(self.groups):
            membership[player, cols] = 1.0
        self._membership = membership  # (d, F): column c belongs to player p

    def __repr__(self) -> str:
        return f"FeatureGroups(num_features={self.num_features}, num_players={self.num_players})"

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"expected tabular input of shape (B, {self.num_features}), got {tuple(x.shape)}"
            )

    def _membership_on(self, ref: Tensor) -> Tensor:
        return self._membership.to(
            device=ref.device, dtype=ref.dtype if ref.is_floating_point() else torch.float32
        )

    def expand_mask(self, keep: Tensor, soft: bool = False) -> Tensor:
        keep = check_keep(keep, self.num_players, soft=soft)
        m = self._membership_on(keep)
        return keep.to(m.dtype) @ m

    def upsample(self, values: Tensor) -> Tensor:
        if values.dim() not in (2, 3) or values.shape[1] != self.num_players:
            raise ValueError(
                f"attributions must have shape (B, {self.num_players}) or (B, {self.num_players}, C), "
                f"got {tuple(values.shape)}"
            )
        m = self._membership_on(values)
        if values.dim() == 2:
            return values @ m
        return torch.einsum("bdc,df->bfc", values, m)

    def pool(self, values: Tensor, reduce: str = "sum") -> Tensor:
        self.check_input(values)
        m = self._membership_on(values)
        pooled = values @ m.T
        if reduce == "mean":
            pooled = pooled / m.sum(dim=1)
        elif reduce != "sum":
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        return pooled


def as_player_values(values: Tensor, x: Tensor, players: Players, who: str = "the method") -> Tensor:
    """Per-player values ``(B, d)`` from what an explanation function returned: taken as they are when already
    one value per player, else a map in the input's layout summed onto the players (``players.pool``).

    Explanation functions written for other libraries return pixel maps; pooling them here lets them be scored
    like the built-in methods (``evaluate.py``'s ``own_methods`` and :func:`lit_xai.explain` both do).

    Raises:
        ValueError: not a tensor, or a shape that is neither, with the shapes that would fit.
    """
    if not isinstance(values, Tensor):
        raise ValueError(f"{who} returned {type(values).__name__}, not a tensor")
    values = values.detach().to(x.device)
    if values.shape == (x.shape[0], players.num_players):
        return values
    try:
        return players.pool(values)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"{who} returned shape {tuple(values.shape)} for inputs {tuple(x.shape)}: return "
            f"({x.shape[0]}, {players.num_players}) per-player values or a map in the input's layout ({err})"
        ) from err


def is_vit(model: object) -> bool:
    """Whether ``model`` looks like a timm VisionTransformer (patch embedding, blocks, prefix tokens).

    The one is-ViT test of the package: ViT-aware defaults (players = the ViT's patches, token dropping, GradCAM
    on tokens, attention rollout) all ask it.
    """
    return all(hasattr(model, name) for name in ("patch_embed", "blocks", "num_prefix_tokens"))


PatchSide = int | Sequence[int]


def players_for(
    x: Tensor | None = None,
    model: object | None = None,
    *,
    image_size: PatchSide | None = None,
    patch_size: PatchSide | None = None,
    num_features: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    default_patch_size: PatchSide | Callable[[tuple[int, int]], PatchSide] | None = 1,
) -> Players:
    """The players of a model's inputs: patches of images, columns (or column groups) of tables.

    Every default "players of this input / this model" in lit_xai comes from here. The kind of data is read from
    ``x`` (images ``(B, C, H, W)`` or rows ``(B, F)``), else from ``image_size`` / ``num_features``, else from a
    timm ViT ``model`` (its own image size). The patch size is ``patch_size``, else a ViT ``model``'s own patch
    size (so players are its tokens), else ``default_patch_size`` (a size, or a function of the image size).

    Args:
        x: an example batch (its shape is used, never its values).
        model: the network the players are for; only a timm ViT changes the defaults.
        image_size: ``H`` or ``(H, W)`` when there is no ``x``.
        patch_size: the side of a player in pixels.
        num_features: the number of columns of tabular data when there is no ``x``.
        groups: optional column groups, one list of column indices per player (tabular only).
        default_patch_size: the patch size when neither ``patch_size`` nor a ViT gives one; ``None`` makes the
            patch size required.

    Example:
        >>> players_for(torch.zeros(2, 3, 8, 8), patch_size=4)
        PatchGrid(image_size=(8, 8), patch_size=(4, 4))
        >>> players_for(torch.zeros(2, 5)).num_players
        5
    """
    if x is not None:
        if x.dim() == 4:
            image_size = tuple(x.shape[-2:])
        elif x.dim() == 2:
            num_features = x.shape[1]
        else:
            raise ValueError(
                f"expected images (B, C, H, W) or tabular rows (B, F), got an input of shape {tuple(x.shape)}"
            )
    if image_size is not None and num_features is not None:
        raise ValueError("give exactly one of image_size (images) or num_features (tabular data)")
    if num_features is not None:
        return FeatureGroups(num_features, groups)
    if groups is not None:
        raise ValueError("groups apply to tabular data; for images group pixels with patch_size")
    vit = model is not None and is_vit(model)
    if vit:
        image_size = image_size or tuple(model.patch_embed.img_size)
        patch_size = patch_size or tuple(model.patch_embed.patch_size)
    if image_size is not None and patch_size is None:
        default = default_patch_size
        patch_size = default(_pair(image_size, "image_size")) if callable(default) else default
    if image_size is None or patch_size is None:
        what = f"a {type(model).__name__}" if model is not None else "these inputs"
        raise ValueError(
            f"cannot tell the players of {what}: set image_size and patch_size (images) or num_features (tabular)"
        )
    return PatchGrid(image_size, patch_size)
