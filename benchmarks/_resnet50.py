"""A ResNet-50 of our own (torchvision's layout), so the channel benchmark needs no torchvision.

Bottleneck blocks (1x1, 3x3 with the stride, 1x1 to four times the width),
stages of (3, 4, 6, 3) blocks, a 1x1 convolution and BatchNorm on the
shortcut where the stride or the width changes, and a 2048 -> 1000 classifier:
25,557,032 parameters and 4,089,184,256 multiply-accumulates at 1x3x224x224
(convolutions and the classifier), as torchvision's ``resnet50``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PARAMS", "MACS", "Bottleneck", "ResNet50", "resnet50"]

PARAMS = 25_557_032
MACS = 4_089_184_256  # at 1x3x224x224
LAYERS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """1x1 down to ``width``, 3x3 (with the stride), 1x1 up to ``4 * width``; plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """The stem (7x7/2 convolution, 3x3/2 max-pooling), four stages of bottlenecks, pooling, the classifier."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages = []
        for index, (blocks, width) in enumerate(zip(LAYERS, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(blocks):
                stage.append(Bottleneck(channels, width, stride if block == 0 else 1))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # torchvision's initialization
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(seed: int = 0) -> ResNet50:
    """A freshly initialized ResNet-50 (the same weights for the same ``seed``)."""
    torch.manual_seed(seed)
    return ResNet50()
