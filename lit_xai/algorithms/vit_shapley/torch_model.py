"""Amortized Shapley value explainers: one forward pass gives every player's value for every class.

ViT Shapley (Covert, Kim & Lee, "Learning to Estimate Shapley Values with Vision Transformers", ICLR 2023) and
FastSHAP (Jethani, Sudarshan, Covert, Lee & Ranganath, ICLR 2022) train a network ``φ(x)`` to predict the
Shapley values of a *surrogate* game ``v(S) = link(f_sur(x with only S))``. This file holds the networks:

- :class:`ViTExplainerNet`: a ViT backbone (initialised from the surrogate), one extra transformer block over all
  tokens, a layer norm and a per-token MLP, so patch token ``i`` gives player ``i``'s values for all classes.
- :class:`ConvExplainerNet`: a CNN backbone's feature map, 1x1 convolutions to one map per class, resized to the
  player grid (FastSHAP's image explainer, for models explained with baseline filling).
- :class:`MLPExplainerNet`: tabular inputs to ``d x C`` values.

and :class:`AmortizedShapley`, which joins an explainer network with the frozen surrogate and its masker and
applies the additive efficient normalisation ``φ + (v(all) − v(∅) − Σφ) / d``, so the values always sum to the
surrogate's ``v(all) − v(∅)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lit_xai.links import get_link
from lit_xai.masking import Masker
from lit_xai.players import PatchGrid, Players

__all__ = [
    "ViTExplainerNet",
    "ConvExplainerNet",
    "MLPExplainerNet",
    "AmortizedShapley",
    "efficient_normalization",
]


def efficient_normalization(phi: Tensor, grand: Tensor, null: Tensor) -> Tensor:
    """Additive efficient normalisation: shift every player equally so that ``Σ_i φ_i = grand − null``.

    Args:
        phi: raw values ``(B, d, C)``.
        grand: ``v(all)`` per image ``(B, C)``.
        null: ``v(∅)``, ``(C,)`` or ``(B, C)``.
    """
    gap = grand - null - phi.sum(dim=1)
    return phi + gap.unsqueeze(1) / phi.shape[1]


def freeze_classifier(backbone: nn.Module) -> nn.Module:
    """Freeze the parts of ``backbone`` after its features (pooling, norm, classifier) and return it.

    The explainer heads read ``forward_features`` only, so these parts never get a gradient; left trainable, DDP
    stops at the first step ("parameters that were not used in producing the loss").
    """
    for name in ("attn_pool", "fc_norm", "head_drop", "head"):
        part = getattr(backbone, name, None)
        if isinstance(part, nn.Module):
            part.requires_grad_(False)
    return backbone


def _players_from_tokens(values: Tensor, token_grid: tuple[int, int], players: PatchGrid) -> Tensor:
    """Token values ``(B, T, C)`` on the ViT's grid -> player values ``(B, d, C)`` (sums over coarser players)."""
    (th, tw), (gh, gw) = token_grid, players.grid_size
    if (th, tw) == (gh, gw):
        return values
    if th % gh or tw % gw:
        raise ValueError(f"{players!r} cannot be mapped onto the explainer's {th}x{tw} token grid")
    grid = values.transpose(1, 2).reshape(values.shape[0], -1, th, tw)
    pooled = F.avg_pool2d(grid, (th // gh, tw // gw)) * ((th // gh) * (tw // gw))
    return pooled.flatten(2).transpose(1, 2)


class ViTExplainerNet(nn.Module):
    """ViT backbone + one extra transformer block + layer norm + per-token MLP -> ``(B, d, C)``.

    Args:
        backbone: a timm VisionTransformer (usually a copy of the surrogate), fine-tuned with the head.
        num_classes: number of classes ``C``.
        players: the patch grid of players (the ViT's own grid, or a coarser one).
        mlp_layers: number of linear layers of the per-token MLP (3 in ViT Shapley).
        mlp_ratio: hidden width of the MLP as a multiple of the embedding width (4 in ViT Shapley).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        players: PatchGrid,
        mlp_layers: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        dim = backbone.embed_dim
        heads = backbone.blocks[0].attn.num_heads
        self.backbone = freeze_classifier(backbone)
        # The backbone's last norm already normalises the tokens, so the extra block skips its first norm.
        self.block = Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
        self.block.norm1 = nn.Identity()
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(mlp_layers - 1):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.players = players
        self.token_grid = tuple(backbone.patch_embed.grid_size)
        players.token_keep(torch.ones(1, players.num_players, dtype=torch.bool), self.token_grid)  # validates

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.norm(self.block(self.backbone.forward_features(x)))
        values = self.mlp(tokens[:, self.backbone.num_prefix_tokens :])
        return _players_from_tokens(values, self.token_grid, self.players)


def _cnn_features(backbone: nn.Module, x: Tensor) -> Tensor:
    if hasattr(backbone, "forward_features"):
        return backbone.forward_features(x)
    raise ValueError(
        f"{type(backbone).__name__} has no forward_features; ConvExplainerNet needs a CNN feature map"
    )


class ConvExplainerNet(nn.Module):
    """CNN feature map -> 1x1 convolutions -> one map per class, resized to the player grid (FastSHAP-style).

    Args:
        backbone: a CNN with ``forward_features`` (our ``SmallCNN`` or a timm CNN).
        num_classes: number of classes ``C``.
        players: the patch grid of players.
        hidden: channels of the hidden 1x1 convolution.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, players: PatchGrid, hidden: int = 256) -> None:
        super().__init__()
        self.backbone = freeze_classifier(backbone)
        self.players = players
        channels = getattr(backbone, "num_features", None)
        if not isinstance(channels, int):
            raise ValueError(
                f"{type(backbone).__name__} does not say how many feature channels it has (num_features)"
            )
        self.head = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        maps = self.head(_cnn_features(self.backbone, x))
        gh, gw = self.players.grid_size
        if maps.shape[-2] >= gh and maps.shape[-1] >= gw:
            maps = F.adaptive_avg_pool2d(maps, (gh, gw))
        else:
            maps = F.interpolate(maps, size=(gh, gw), mode="bilinear", align_corners=False)
        return maps.flatten(2).transpose(1, 2)


class MLPExplainerNet(nn.Module):
    """Tabular explainer: an MLP from the ``F`` inputs to ``d x C`` values."""

    def __init__(
        self, num_features: int, num_players: int, num_classes: int, hidden: tuple[int, ...] = (256, 256)
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, num_players * num_classes))
        self.net = nn.Sequential(*layers)
        self.shape = (num_players, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.shape[0], *self.shape)


class AmortizedShapley(nn.Module):
    """An explainer network plus the frozen surrogate game it explains.

    ``forward(x)`` returns normalised Shapley values ``(B, d, C)`` for all players and classes; the cost is one
    explainer pass and one surrogate pass (for ``v(all)``). ``v(∅)`` is cached in the ``null`` buffer when the
    masker's empty coalition is the same for every input (token dropping, constant baselines).

    Args:
        explainer: network ``x -> (B, d, C)`` raw values.
        surrogate: the model whose masked predictions define the game (frozen).
        masker: how the surrogate sees missing players.
        link: ``"softmax"`` (probabilities, the default), ``"log_softmax"``, ``"logits"`` or a callable.
        normalization: ``"additive"`` (efficient, default) or ``"none"``.
    """

    def __init__(
        self,
        explainer: nn.Module,
        surrogate: nn.Module,
        masker: Masker,
        link: str = "softmax",
        normalization: str = "additive",
    ) -> None:
        super().__init__()
        if normalization not in ("additive", "none"):
            raise ValueError(f"normalization must be 'additive' or 'none', got {normalization!r}")
        self.explainer = explainer
        self.surrogate = surrogate.requires_grad_(False)
        self.masker = masker
        self.link_name = link if isinstance(link, str) else getattr(link, "__name__", "custom")
        self.link = get_link(link)
        self.normalization = normalization
        self.register_buffer("null", torch.empty(0))

    @property
    def players(self) -> Players:
        return self.masker.players

    @property
    def num_players(self) -> int:
        return self.masker.num_players

    def value(self, x: Tensor, keep: Tensor) -> Tensor:
        """``v(S)`` for each row: the surrogate's linked prediction with only the kept players."""
        return self.link(self.masker(self.surrogate, x, keep))

    @torch.no_grad()
    def grand(self, x: Tensor) -> Tensor:
        return self.value(x, torch.ones(x.shape[0], self.num_players, dtype=torch.bool, device=x.device))

    @torch.no_grad()
    def null_value(self, x: Tensor) -> Tensor:
        """``v(∅)``: cached after the first call when the masker allows it, else computed for ``x``."""
        if self.null.numel():
            return self.null
        null = self.value(x, torch.zeros(x.shape[0], self.num_players, dtype=torch.bool, device=x.device))
        if not self.masker.constant_null:
            return null
        self.null = null[0].detach().clone()
        return self.null

    def train(self, mode: bool = True):
        super().train(mode)
        self.surrogate.eval()  # the game must not change with dropout or batch-norm updates
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The cached v(∅) is empty until first computed; take whatever size the checkpoint holds.
        cached = state_dict.get(prefix + "null")
        if cached is not None:
            self.null = torch.empty_like(cached)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, grand: Tensor | None = None) -> Tensor:
        phi = self.explainer(x)
        if self.normalization == "none":
            return phi
        grand = self.grand(x) if grand is None else grand
        return efficient_normalization(phi, grand, self.null_value(x))

    @torch.no_grad()
    def attribute(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Shapley values ``(B, d)`` for ``target``, or ``(B, d, C)`` for all classes when ``target`` is None."""
        phi = self(x)
        if target is None:
            return phi
        target = torch.as_tensor(target, device=x.device).long().expand(x.shape[0])
        return phi.gather(2, target.view(-1, 1, 1).expand(-1, phi.shape[1], 1)).squeeze(2)
