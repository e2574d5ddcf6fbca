"""Maskers: how a model sees an input with some players missing.

A masker is called as ``masker(model, x, keep) -> logits`` with ``keep`` a bool tensor ``(B, d)``. Four ways of
removing players are provided (Covert, Lundberg & Lee, "Explaining by Removing", JMLR 2021):

- :class:`TokenDrop` (timm ViTs): missing patches are dropped from the token sequence after the position
  embedding is added, so the model never sees them and the cost follows the number of tokens kept (Jain et al.,
  "Missingness Bias in Model Debugging", ICLR 2022).
- :class:`AttentionMask` (timm ViTs): the full sequence is run but no token attends to a missing patch (the
  "pre-softmax" masking of ViT Shapley, Covert, Kim & Lee, ICLR 2023). Equivalent to token dropping, at full cost.
- :class:`BaselineFill` (any model): missing pixels or columns are replaced by a baseline (zeros, a mean, a blurred
  copy, noise, or a given tensor).
  :class:`RandomRangeFill` fills with uniform noise within each sample's range (saliency-guided training).
- :class:`AppendMask` (models trained for it): missing values are zeroed and the mask is appended as an extra
  channel or extra columns, so the model can tell "zero" from "missing" (FastSHAP; Covert et al., ICML 2023).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.players import FeatureGroups, PatchGrid, Players, check_keep
from lit_xai.registry import register
from lit_xai.vit_tokens import bucket_rows, embed_tokens, empty_logits, kept_tokens, pooled_head, run_blocks

__all__ = [
    "Masker",
    "TokenDrop",
    "AttentionMask",
    "BaselineFill",
    "RandomRangeFill",
    "AppendMask",
    "build_masker",
    "register_masker",
    "MASKERS",
]


class Masker:
    """Base class: validates inputs, then realises the missing players.

    Args:
        players: the players of the input (:class:`PatchGrid` or :class:`FeatureGroups`).
    """

    #: Whether the value of the empty coalition is the same for every input, so it can be computed once and cached.
    constant_null: bool = True

    def __init__(self, players: Players) -> None:
        self.players = players

    @property
    def num_players(self) -> int:
        return self.players.num_players

    def __call__(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        self.players.check_input(x)
        keep = check_keep(keep, self.num_players, batch_size=x.shape[0]).to(x.device)
        return self.forward(model, x, keep)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.players!r})"


# ----------------------------------------------------------------------------------------------------------------
# ViT maskers
# ----------------------------------------------------------------------------------------------------------------


class TokenDrop(Masker):
    """Drop missing patch tokens (after position embeddings); cost follows the tokens kept.

    Rows are grouped by their number of kept tokens into at most ``num_buckets`` groups, each padded to its longest
    row with the padding hidden from attention by a key-padding mask. The groups are the partition of the sorted
    counts that minimises the padded number of tokens (a small dynamic programme over the distinct counts), so a
    batch pays for little more than the tokens it keeps, whatever the distribution of coalition sizes.

    Args:
        players: a :class:`PatchGrid` matching the ViT's patch grid (or coarser by a whole number of tokens).
        num_buckets: largest number of separately run groups.
    """

    def __init__(self, players: PatchGrid, num_buckets: int = 8) -> None:
        super().__init__(players)
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
        self.num_buckets = int(num_buckets)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        token_keep = kept_tokens(model, self.players, keep, "TokenDrop")
        if x.shape[0] == 0:
            return empty_logits(model, x)
        tokens, rope = embed_tokens(model, x)
        prefix = model.num_prefix_tokens
        counts = token_keep.sum(1)
        logits: Tensor | None = None
        for rows in bucket_rows(counts, self.num_buckets, prefix):
            out = self._forward_rows(model, tokens[rows], token_keep[rows], counts[rows], prefix, rope)
            if logits is None:
                logits = out.new_empty(x.shape[0], out.shape[1])
            logits[rows] = out
        return logits

    @staticmethod
    def _forward_rows(
        model: nn.Module, tokens: Tensor, token_keep: Tensor, counts: Tensor, prefix: int, rope: Tensor | None
    ) -> Tensor:
        longest = int(counts.max())
        # Stable sort on "missing" puts kept tokens first, in their original order.
        positions = (~token_keep).to(torch.int8).argsort(dim=1, stable=True)[:, :longest]
        patch_tokens = tokens[:, prefix:].gather(1, positions.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        sequence = torch.cat([tokens[:, :prefix], patch_tokens], dim=1)
        if (
            rope is not None
        ):  # each kept token keeps its own rotary embedding: (B, 1, longest, D), one per row
            rope = rope[positions].unsqueeze(1)
        visible = torch.arange(longest, device=counts.device) < counts.unsqueeze(1)
        padded = not bool(visible.all())
        key_visible = torch.cat([visible.new_ones(visible.shape[0], prefix), visible], 1) if padded else None
        return pooled_head(model, run_blocks(model, sequence, key_visible, rope), visible)


class AttentionMask(Masker):
    """Run the full token sequence, but no token attends to a missing patch (ViT Shapley's pre-softmax masking)."""

    def __init__(self, players: PatchGrid) -> None:
        super().__init__(players)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        token_keep = kept_tokens(model, self.players, keep, "AttentionMask")
        if x.shape[0] == 0:
            return empty_logits(model, x)
        tokens, rope = embed_tokens(model, x)
        prefix = model.num_prefix_tokens
        key_visible = torch.cat([token_keep.new_ones(token_keep.shape[0], prefix), token_keep], dim=1)
        return pooled_head(model, run_blocks(model, tokens, key_visible, rope), token_keep)


# ----------------------------------------------------------------------------------------------------------------
# Input-space maskers (any model)
# ----------------------------------------------------------------------------------------------------------------

FILLS = ("zeros", "mean", "blur", "noise")


def gaussian_blur(x: Tensor, sigma: float, radius: int | None = None) -> Tensor:
    """Blur each channel of ``(B, C, H, W)`` with a normalised, separable Gaussian of ``2 * radius + 1`` taps.

    The one Gaussian blur of lit_xai: the ``"blur"`` baseline fill, IBA's smoothing of ``lambda`` and the refinement
    of input-agnostic maps all use it.

    Args:
        x: ``(B, C, H, W)``.
        sigma: standard deviation in pixels; ``0`` returns ``x``.
        radius: taps on each side; ``None`` takes ``ceil(3 sigma)`` (at least 1), which covers 99.7% of the
            Gaussian's mass. IBA uses ``round(2 sigma)`` (Schulz et al.'s kernel size).

    The border is padded by replication, which also works for maps smaller than the kernel. Because the kernel sums
    to one and the padding copies values, ``blur(1 - a) == 1 - blur(a)``: the information bottleneck relies on it
    to compute ``1 - lambda`` without cancellation.
    """
    if sigma < 0:
        raise ValueError(f"the blur's sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    radius = max(1, math.ceil(3 * sigma)) if radius is None else int(radius)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    # Separable: rows then columns (the 2-D Gaussian is the outer product of two 1-D ones).
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class BaselineFill(Masker):
    """Replace missing players by a baseline: ``x * m + baseline * (1 - m)``.

    Args:
        players: the players of the input.
        fill: ``"zeros"``; ``"mean"`` (the given ``mean``, per channel or per column, e.g. the training-set mean);
            ``"blur"`` (a Gaussian-blurred copy of the image, ``blur_sigma`` pixels); ``"noise"`` (Gaussian noise
            with ``noise_std``); a number; or a tensor broadcastable to the input.
        mean: the mean used by ``fill="mean"``.
        blur_sigma: standard deviation of the blur, in pixels.
        noise_std: standard deviation of the noise fill.
        generator: optional generator for ``fill="noise"``.
    """

    def __init__(
        self,
        players: Players,
        fill: str | float | Tensor = "zeros",
        mean: float | Sequence[float] | Tensor | None = None,
        blur_sigma: float = 4.0,
        noise_std: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(players)
        if isinstance(fill, str) and fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}, a number or a tensor")
        if fill == "mean" and mean is None:
            raise ValueError(
                "fill='mean' needs the mean to fill with: pass mean=<per-channel or per-column values>"
            )
        if fill == "blur" and not isinstance(players, PatchGrid):
            raise ValueError("fill='blur' only applies to images (a PatchGrid of players)")
        self.fill = fill
        self.constant_null = not (isinstance(fill, str) and fill in ("blur", "noise"))
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.blur_sigma = float(blur_sigma)
        self.noise_std = float(noise_std)
        self.generator = generator

    def baseline(self, x: Tensor) -> Tensor:
        """The values that replace missing players, broadcastable to ``x``."""
        fill = self.fill
        if isinstance(fill, Tensor):
            return fill.to(x)
        if not isinstance(fill, str):
            return torch.full_like(x, float(fill))
        if fill == "zeros":
            return torch.zeros_like(x)
        if fill == "mean":
            mean = self.mean.to(x)
            return mean.view(1, -1, 1, 1) if x.dim() == 4 and mean.dim() == 1 else mean
        if fill == "blur":
            return gaussian_blur(x, self.blur_sigma)
        noise = torch.randn(
            x.shape, generator=self.generator, device=self.generator.device if self.generator else None
        )
        return noise.to(x) * self.noise_std

    def mask_input(self, x: Tensor, keep: Tensor, soft: bool = False) -> Tensor:
        """The input the model sees: kept players unchanged, missing ones replaced by the baseline (with ``soft``,
        a player kept by a fraction ``m`` is ``m x + (1 - m) baseline``)."""
        m = self.players.expand_mask(keep, soft=soft).to(x)
        return x * m + self.baseline(x) * (1 - m)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        return model(self.mask_input(x, keep))

    def fill_soft(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        """Logits with players kept *in part*: ``keep`` ``(B, d)`` holds fractions in ``[0, 1]``, and each player is
        blended with the baseline, ``m x + (1 - m) baseline`` (Sobol attribution's perturbations, Fel et al.,
        NeurIPS 2021). Only baseline filling has such a path; token dropping keeps a token or not."""
        self.players.check_input(x)
        keep = check_keep(keep, self.num_players, batch_size=x.shape[0], soft=True).to(x.device)
        return model(self.mask_input(x, keep, soft=True))


class RandomRangeFill(BaselineFill):
    """Missing values become uniform random numbers within each sample's own ``[min, max]``.

    The fill of saliency-guided training (Ismail, Corrada Bravo & Feizi, NeurIPS 2021). A fresh draw per call, from
    ``generator`` if given (else the global RNG, seeded by ``seed_everything``).
    """

    def __init__(self, players: Players, generator: torch.Generator | None = None) -> None:
        super().__init__(players, fill=0.0, generator=generator)
        self.constant_null = False

    def baseline(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.dim()))
        low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        device = self.generator.device if self.generator is not None else x.device
        u = torch.rand(x.shape, generator=self.generator, device=device).to(x)
        return low + (high - low) * u


class AppendMask(Masker):
    """Zero the missing players and append the mask, so the model knows what is missing.

    Images get the pixel-level mask as one extra channel: ``(B, C + 1, H, W)``. Tabular inputs get the player-level
    mask as extra columns: ``(B, F + d)``. Build the model with :meth:`extra_inputs` more input channels/columns.
    """

    def extra_inputs(self) -> int:
        """How many input channels (images) or columns (tabular) the mask adds."""
        return 1 if isinstance(self.players, PatchGrid) else self.num_players

    def mask_input(self, x: Tensor, keep: Tensor) -> Tensor:
        m = self.players.expand_mask(keep).to(x)
        if isinstance(self.players, FeatureGroups):
            return torch.cat([x * m, keep.to(x)], dim=1)
        return torch.cat([x * m, m], dim=1)

    def forward(self, model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        return model(self.mask_input(x, keep))


MASKERS: dict[str, type[Masker]] = {
    "token_drop": TokenDrop,
    "attention_mask": AttentionMask,
    "baseline": BaselineFill,
    "random_range": RandomRangeFill,
    "append_mask": AppendMask,
}


def register_masker(name: str):
    """Class decorator: make a :class:`Masker` subclass buildable by ``name`` (``build_masker``, configs'
    ``masker:`` keys, ``evaluate.py``'s ``model.masker``). Its constructor takes the players first.

    Example:
        >>> @register_masker("half_fill")
        ... class HalfFill(BaselineFill):
        ...     def baseline(self, x):
        ...         return torch.full_like(x, 0.5)
        >>> from lit_xai.players import FeatureGroups
        >>> build_masker("half_fill", FeatureGroups(2))(nn.Identity(), torch.ones(1, 2), torch.tensor([[True, False]]))
        tensor([[1.0000, 0.5000]])
        >>> _ = MASKERS.pop("half_fill")  # (keep the doctest from leaking into other tests)
    """

    def decorator(cls: type[Masker]) -> type[Masker]:
        if not (isinstance(cls, type) and issubclass(cls, Masker)):
            raise ValueError(f"register_masker needs a Masker subclass, got {cls!r}")
        return register(MASKERS, "masker", name, cls)

    return decorator


def build_masker(name: str, players: Players, **kwargs) -> Masker:
    """Build a masker by name (``token_drop``, ``attention_mask``, ``baseline``, ``append_mask``).

    Example:
        >>> from torch import nn
        >>> from lit_xai.players import FeatureGroups
        >>> masker = build_masker("baseline", FeatureGroups(3), fill=0.5)
        >>> masker(nn.Identity(), torch.ones(1, 3), torch.tensor([[True, False, True]])).tolist()
        [[1.0, 0.5, 1.0]]
    """
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; choose one of {', '.join(MASKERS)}")
    return MASKERS[name](players, **kwargs)
