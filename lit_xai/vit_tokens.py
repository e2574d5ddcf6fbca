"""How a timm ViT runs on a subset of its patch tokens: the pieces :class:`~lit_xai.masking.TokenDrop` and
:class:`~lit_xai.masking.AttentionMask` share (which families can be run, embedding, blocks with a key mask, the
head pooled over visible patches) and the bucketing that keeps token dropping's padding small.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.players import PatchGrid, Players

__all__ = [
    "bucket_rows",
    "check_vit",
    "embed_tokens",
    "empty_logits",
    "kept_tokens",
    "pooled_head",
    "run_blocks",
]


def check_vit(model: nn.Module, masker: str) -> None:
    """Refuse, naming the family, the ViTs whose tokens the maskers cannot drop or hide exactly."""
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens", "fc_norm", "head")
    missing = [name for name in needed if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"{masker} needs a timm VisionTransformer or Eva (missing {', '.join(missing)} on {type(model).__name__}; "
            f"relative-position ViTs and hierarchical models such as Swin are not supported); use BaselineFill"
        )
    if getattr(model, "attn_pool", None) is not None:
        raise ValueError(
            f"{masker} does not support attention-pooled (MAP head) ViTs; use BaselineFill instead"
        )
    if getattr(model, "rope_mixed", False):
        raise ValueError(
            f"{masker} does not support depth-dependent ('mixed') rotary embeddings ({type(model).__name__}); "
            f"use BaselineFill instead"
        )
    if getattr(model, "head_dist", None) is not None and model.training and model.distilled_training:
        raise ValueError(
            f"{masker}: a distilled DeiT in distillation training returns two outputs; call "
            f"model.set_distilled_training(False) or explain it in eval mode"
        )


def embed_tokens(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Patch tokens with position embeddings and prefix tokens, exactly as timm's ``forward_features`` starts, and
    the rotary position embedding of the patches ``(num_patches, D)`` for RoPE models (timm's ``Eva``; else None)."""
    embedded = model._pos_embed(model.patch_embed(x))
    if isinstance(embedded, tuple):  # Eva: (tokens, rope); its patch dropout already ran inside _pos_embed
        tokens, rope = embedded
    else:
        tokens, rope = model.patch_drop(embedded), None
    return model.norm_pre(tokens), rope


def run_blocks(model: nn.Module, tokens: Tensor, key_visible: Tensor | None, rope: Tensor | None) -> Tensor:
    if key_visible is None and rope is None:
        return model.norm(model.blocks(tokens))
    bias = None
    if key_visible is not None:
        # Additive mask (B, 1, 1, N): a large negative number rather than -inf keeps padded query rows finite.
        bias = torch.zeros(key_visible.shape, dtype=tokens.dtype, device=tokens.device)
        bias = bias.masked_fill(~key_visible, torch.finfo(tokens.dtype).min)[:, None, None, :]
    for block in model.blocks:
        tokens = block(tokens, attn_mask=bias) if rope is None else block(tokens, rope=rope, attn_mask=bias)
    return model.norm(tokens)


def pooled_head(model: nn.Module, tokens: Tensor, patch_visible: Tensor) -> Tensor:
    """timm's ``forward_head`` with average pooling restricted to the visible patch tokens."""
    prefix = model.num_prefix_tokens
    if getattr(model, "head_dist", None) is not None:
        # DeiT distilled: at inference timm averages the class-token head and the distillation-token head.
        cls_logits = model.head(model.head_drop(tokens[:, 0]))
        return (cls_logits + model.head_dist(model.head_drop(tokens[:, 1]))) / 2
    pool = model.global_pool
    if pool == "token":
        pooled = tokens[:, 0]
    elif pool == "avg":
        weights = patch_visible.to(tokens.dtype)
        if getattr(model, "pool_include_prefix", False):
            weights = torch.cat([weights.new_ones(weights.shape[0], prefix), weights], dim=1)
        else:
            tokens = tokens[:, prefix:]
        pooled = (tokens * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)
    else:
        raise ValueError(f"ViT maskers support global_pool 'token' or 'avg', got {pool!r}")
    return model.head(model.head_drop(model.fc_norm(pooled)))


def check_not_empty(model: nn.Module, token_keep: Tensor, masker: str) -> None:
    if model.num_prefix_tokens == 0 and not bool(token_keep.any(dim=1).all()):
        raise ValueError(
            f"{masker}: this ViT has no prefix (class/register) token, so a coalition with no players leaves "
            f"nothing to attend to; use a ViT with a class token, or BaselineFill"
        )


def empty_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Logits ``(0, num_classes)`` for an empty batch (a model run on no rows returns no rows, not None)."""
    return x.new_zeros(0, model.num_classes)


def kept_tokens(model: nn.Module, grid: Players, keep: Tensor, masker: str) -> Tensor:
    """The patch tokens each row keeps ``(B, num_patches)``, once ``masker`` is known to be able to run ``model``."""
    check_vit(model, masker)
    if not isinstance(grid, PatchGrid):
        raise ValueError("ViT maskers need a PatchGrid of players")
    token_keep = grid.token_keep(keep, tuple(model.patch_embed.grid_size))
    check_not_empty(model, token_keep, masker)
    return token_keep


def bucket_rows(counts: Tensor, num_buckets: int, prefix: int = 0) -> list[Tensor]:
    """Split rows into at most ``num_buckets`` groups of similar length, minimising the padded token count.

    Rows sorted by length are cut into contiguous groups; a group costs ``rows x (longest + prefix)`` tokens.
    The optimal cuts are found by dynamic programming over the distinct lengths, vectorised over cut points.

    Returns:
        Row indices of each non-empty group.
    """
    order = counts.argsort()
    lengths, rows_per_length = torch.unique_consecutive(counts[order].cpu(), return_counts=True)
    u = lengths.numel()
    if u <= num_buckets:
        ends = torch.arange(1, u + 1)
    else:
        cum_rows = torch.cat([torch.zeros(1, dtype=torch.long), rows_per_length.cumsum(0)]).double()
        size = (lengths + prefix).double()
        # cost[i, j]: one group holding lengths i..j-1 (padded to length j-1), for i < j.
        cost = (cum_rows[None, 1:] - cum_rows[:-1, None]) * size[None, :]
        cost = torch.where(torch.arange(u)[:, None] <= torch.arange(u)[None, :], cost, torch.inf)
        best = cost[0].clone()  # best[j]: lengths 0..j in one group
        choices = []
        for _ in range(num_buckets - 1):
            # Last group starts at i+1 (after the best split of 0..i), or no new split at all.
            candidates = torch.cat(
                [best[:, None] + torch.cat([cost[1:], torch.full((1, u), torch.inf)]), best[None]]
            )
            best, argmin = candidates.min(0)
            choices.append(argmin)
        ends, j = [], u - 1
        for argmin in reversed(choices):
            i = int(argmin[j])
            if i < u:  # a split: the last group is lengths i+1..j
                ends.append(j + 1)
                j = i
        ends.append(j + 1)
        ends = torch.tensor(sorted(ends))
    row_ends = rows_per_length.cumsum(0)[ends - 1].tolist()
    starts = [0] + row_ends[:-1]
    return [order[a:b] for a, b in zip(starts, row_ends)]
