"""Small networks for tabular data and small images (digits, shapes): an MLP and a CNN."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP", "SmallCNN"]


class MLP(nn.Module):
    """A multilayer perceptron on flattened inputs.

    Args:
        in_features: size of the flattened input (e.g. 64 for 8x8 digits, 30 for breast cancer).
        num_classes: number of outputs.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden activation.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (128, 128), dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input features per sample, got shape {tuple(x.shape)}"
            )
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with max pooling, global average pooling and a linear head.

    ``features`` is the last convolutional stage, where GradCAM and IBA look.

    Args:
        in_chans: input channels.
        num_classes: number of outputs.
        channels: channels of each stage; every stage but the last halves the resolution.
        dropout: dropout before the head.
    """

    def __init__(
        self, in_chans: int, num_classes: int, channels: Sequence[int] = (32, 64, 128), dropout: float = 0.0
    ):
        super().__init__()
        stages: list[nn.Module] = []
        width = in_chans
        for i, c in enumerate(channels):
            stages += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            if i < len(channels) - 1:
                stages.append(nn.MaxPool2d(2))
            width = c
        self.stem = nn.Sequential(*stages[:-3])
        self.features = nn.Sequential(*stages[-3:])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes)
        )
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = width  # channels of the feature map, as timm models name it

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"SmallCNN expects images (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        return self.head(self.forward_features(x))
