"""Networks beyond the paper's family: residual blocks with BatchNorm, max pooling.

``resnet_small`` is what the optimisation attacks (``ig``, ``dlg``) are for: the linear attack and
the audit refuse it, naming its BatchNorm (in training mode) or, in evaluation mode, its skip
connections. The max-pooling networks are taken by the linear attack, which estimates the
positions of the maxima (docs/attack.md).

- ``resnet_small``: a 3x3 stem and three residual blocks (16, 32, 64 channels, the last two with
  stride 2), each conv followed by BatchNorm, global average pooling, one Linear layer.
- ``maxpool_cnn``: two 3x3 convolutions (16, 32 channels) each with ReLU and 2x2 max pooling, one
  Linear layer.
- ``flower_cnn``: the network of Flower's PyTorch quickstart: conv 6 k5, ReLU, max pool 2,
  conv 16 k5, ReLU, max pool 2, flatten, FC 120, ReLU, FC 84, ReLU, FC ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fl_leak.models.registry import register_model


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 conv + BatchNorm) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A stem and three residual blocks, global average pooling and a Linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks = []
        for index, width in enumerate(widths):
            previous = widths[max(index - 1, 0)]
            blocks.append(ResidualBlock(previous, width, stride=1 if index == 0 else 2))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


@register_model("resnet_small")
def resnet_small(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """``ResNetSmall`` for inputs ``(C, H, W)``."""
    return ResNetSmall(input_shape[0], num_classes)


@register_model("maxpool_cnn")
def maxpool_cnn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Two conv + ReLU + 2x2 max-pool stages and a Linear classifier."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(*features, nn.Linear(_flat_size(features, input_shape), num_classes))


@register_model("flower_cnn")
def flower_cnn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Flower's PyTorch quickstart network (400 flat features for 32x32 inputs)."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
    )
    return nn.Sequential(
        *features,
        nn.Linear(_flat_size(features, input_shape), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
