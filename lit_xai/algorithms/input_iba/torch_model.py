"""The networks of InputIBA's generative prior (Zhang et al., NeurIPS 2021), batched over images.

InputIBA learns, for each image, a prior over which input pixels carry the information that the feature
bottleneck of IBA found. A Wasserstein GAN does it:

* the **generator** has no network of its own: it is a learnable input mask ``m = sigmoid(mask_logit)`` and
  learnable per-channel noise statistics. It draws ``m * x + (1 - m) * noise`` and runs the classifier up to the
  bottleneck layer, so its "samples" are feature maps;
* the **critic** is a small convolutional network that tells these feature maps from samples of the feature
  bottleneck's distribution ``lambda_F * R + (1 - lambda_F) * eps``.

Every image gets its own generator parameters and its own critic. Both are stored as tensors with a leading
image dimension; the critic runs as grouped convolutions (one group per image) so all critics share one kernel
call, and per-image losses are summed so each image's parameters get exactly the gradients of a solo run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.layers import forward_to_layer

__all__ = ["BatchedCritic", "MaskGenerator", "feature_grid"]


def feature_grid(features: Tensor, num_prefix_tokens: int | None = None) -> Tensor:
    """Feature maps ``(B, C, h, w)`` from a CNN layer's output or a ViT block's tokens ``(B, N, D)``.

    Prefix tokens (class, register) are dropped; when ``num_prefix_tokens`` is not given they are the tokens
    before the largest square grid that fits.
    """
    if features.dim() == 4:
        return features
    if features.dim() != 3:
        raise ValueError(
            f"expected a CNN feature map (B, C, h, w) or ViT tokens (B, N, D), got shape {tuple(features.shape)}"
        )
    n = features.shape[1]
    side = math.isqrt(n if num_prefix_tokens is None else n - num_prefix_tokens)
    patches = features[:, n - side * side :]
    return patches.transpose(1, 2).reshape(features.shape[0], features.shape[2], side, side)


class MaskGenerator(nn.Module):
    """Per-image learnable input mask and noise statistics; its output is the masked input's features.

    Args:
        x: the images ``(B, C, H, W)``.
        init_mask: initial mask ``(B, H, W)`` or ``(B, C, H, W)`` in ``(0, 1)`` (the upsampled feature map).
        noise_mean: initial noise mean per channel ``(C,)`` (the input's mean).
        noise_std: initial noise standard deviation per channel ``(C,)``.
    """

    def __init__(self, x: Tensor, init_mask: Tensor, noise_mean: Tensor, noise_std: Tensor) -> None:
        super().__init__()
        b, c = x.shape[:2]
        if init_mask.dim() == 3:
            init_mask = init_mask.unsqueeze(1)
        init_mask = init_mask.expand_as(x).clamp(1e-4, 1 - 1e-4)
        self.register_buffer("x", x)
        # One mask per channel, as in the original: the input bottleneck's lambda is per channel too.
        self.mask_logit = nn.Parameter(torch.logit(init_mask).clone())
        self.noise_mean = nn.Parameter(noise_mean.view(1, c).expand(b, c).clone())
        self.noise_std = nn.Parameter(noise_std.view(1, c).expand(b, c).clone())

    def mask(self) -> Tensor:
        """The mask ``(B, C, H, W)``, always in ``[0, 1]``."""
        return torch.sigmoid(self.mask_logit)

    def masked_input(self, gaussian: Tensor) -> Tensor:
        """``m * x + (1 - m) * noise`` for standard normal ``gaussian`` ``(B, N, C, H, W)``; same shape out."""
        noise = self.noise_std[:, None, :, None, None] * gaussian + self.noise_mean[:, None, :, None, None]
        m = self.mask().unsqueeze(1)
        return m * self.x.unsqueeze(1) + (1 - m) * noise

    def forward(self, model: nn.Module, layer: nn.Module, gaussian: Tensor) -> Tensor:
        """Features ``(B, N, *feature_shape)`` of the masked inputs at ``layer``."""
        b, n = gaussian.shape[:2]
        features = forward_to_layer(model, layer, self.masked_input(gaussian).flatten(0, 1))
        return features.view(b, n, *features.shape[1:])


class BatchedCritic(nn.Module):
    """``B`` independent Wasserstein critics on feature maps ``(C, h, w)``: conv-LeakyReLU x2, then linear.

    Args:
        num_images: ``B``, the number of independent critics.
        in_channels: ``C``.
        spatial: ``(h, w)``.
        hidden: channels of the hidden convolutions.
        generators: one random generator per image for the initialisation (so a critic does not depend on
            which other images share the batch); ``None`` uses the global generator.
    """

    def __init__(
        self,
        num_images: int,
        in_channels: int,
        spatial: Sequence[int],
        hidden: int = 32,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        super().__init__()
        self.num_images, self.in_channels, self.hidden = num_images, in_channels, hidden
        h, w = spatial
        # Stride 2 while the map is large enough: the critic needs a global view, not resolution.
        self.strides = []
        for _ in range(2):
            stride = 2 if min(h, w) >= 4 else 1
            self.strides.append(stride)
            h, w = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
        self.conv1_weight = nn.Parameter(torch.empty(num_images * hidden, in_channels, 3, 3))
        self.conv1_bias = nn.Parameter(torch.empty(num_images * hidden))
        self.conv2_weight = nn.Parameter(torch.empty(num_images * hidden, hidden, 3, 3))
        self.conv2_bias = nn.Parameter(torch.empty(num_images * hidden))
        self.out_weight = nn.Parameter(torch.empty(num_images, hidden * h * w))
        self.out_bias = nn.Parameter(torch.empty(num_images))
        self.reset_parameters(generators)

    @torch.no_grad()
    def reset_parameters(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """PyTorch's default layer initialisation (uniform in +-1/sqrt(fan_in)), image by image."""
        gens = generators if generators is not None else [None] * self.num_images
        groups = [
            (self.conv1_weight, self.conv1_bias, self.in_channels * 9),
            (self.conv2_weight, self.conv2_bias, self.hidden * 9),
            (self.out_weight, self.out_bias, self.out_weight.shape[1]),
        ]
        for i, gen in enumerate(gens):
            for weight, bias, fan_in in groups:
                rows = weight.shape[0] // self.num_images
                bound = 1 / math.sqrt(fan_in)
                sl = slice(i * rows, (i + 1) * rows)
                weight[sl].uniform_(-bound, bound, generator=gen)
                bias[sl].uniform_(-bound, bound, generator=gen)

    def forward(self, features: Tensor) -> Tensor:
        """Scores ``(B, N)`` for features ``(B, N, C, h, w)``; critic ``i`` sees only image ``i``'s samples."""
        b, n = features.shape[:2]
        if b != self.num_images:
            raise ValueError(
                f"this critic holds {self.num_images} image critics, got features for {b} images"
            )
        # Images go into the channel axis so that a grouped convolution applies each image's own kernels.
        x = features.transpose(0, 1).reshape(n, b * self.in_channels, *features.shape[3:])
        x = F.leaky_relu(F.conv2d(x, self.conv1_weight, self.conv1_bias, self.strides[0], 1, groups=b), 0.2)
        x = F.leaky_relu(F.conv2d(x, self.conv2_weight, self.conv2_bias, self.strides[1], 1, groups=b), 0.2)
        x = x.view(n, b, -1)
        return (torch.einsum("nbk,bk->bn", x, self.out_weight) + self.out_bias[:, None]).contiguous()

    @torch.no_grad()
    def clip_(self, value: float) -> None:
        """WGAN weight clipping (Arjovsky et al., 2017): keeps the critic (roughly) Lipschitz."""
        for p in self.parameters():
            p.clamp_(-value, value)
