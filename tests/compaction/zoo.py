"""The model zoo of the channel-compaction tests (issue #13): small models with the structures that couple channels.

Each builder returns ``(model, example_inputs)``: a freshly initialised model
(random, from torch's global RNG, so the caller seeds it with
``torch.manual_seed``) and a tuple of example input tensors with a batch of 2.
``ZOO`` holds the architectures the issue names (residual adds, bottlenecks,
depthwise and grouped convolutions, dense concatenation, a U-Net, a flatten
into a linear layer, attention, split/chunk); ``EXTRA`` holds the layer kinds
that need a rule of their own (squeeze-excitation, GroupNorm, 1-D convolution,
InstanceNorm, PReLU, embeddings). Every model is a few thousand to a few tens of
thousands of parameters, so one forward takes a few milliseconds on a CPU.

torchvision is not a dependency, so the architectures are written out here,
after torchvision's layouts at small widths.

The test modules load this file by path (the test folders are not packages):

>>> model, (x,) = ZOO["mlp"]()
>>> tuple(model(x).shape)
(2, 10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneplug.models import LeNet

__all__ = [
    "EXTRA",
    "ZOO",
    "BasicBlock",
    "Bottleneck",
    "Builder",
    "CatSplitNet",
    "Conv1dNet",
    "DenseBlock",
    "DenseLayer",
    "DenseNetBlock",
    "DoubleConv",
    "EmbeddingMLP",
    "GroupNormNet",
    "InstanceNormNet",
    "InvertedResidual",
    "MLP",
    "MobileNetV2",
    "PReLUNet",
    "ResNeXt",
    "ResNeXtBlock",
    "ResNet",
    "SENet",
    "SqueezeExcitation",
    "Transition",
    "UNet",
    "VGG",
    "ViT",
    "ViTBlock",
]

BATCH = 2

Builder = Callable[[], tuple[nn.Module, tuple[Tensor, ...]]]


def _images(channels: int, size: int) -> tuple[Tensor, ...]:
    """A batch of random images, the example input of the image models."""
    return (torch.randn(BATCH, channels, size, size),)


def _conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    """A padded 3x3 convolution (no bias: the BatchNorm has one), its BatchNorm, a ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# --- ResNet (BasicBlock and Bottleneck) -------------------------------------------------------------------------


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """torchvision's shortcut branch (1x1 conv + BN), where the block changes the width or the resolution."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the (downsampled) input, ReLU."""

    expansion: ClassVar[int] = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """ResNet's bottleneck block (v1.5: the stride on the 3x3): 1x1 reduce, 3x3, 1x1 expand by 4, plus the input."""

    expansion: ClassVar[int] = 4

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
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


class ResNet(nn.Module):
    """A two-stage ResNet: stem conv-BN-ReLU-maxpool, stages of ``block`` (the second at stride 2), avgpool, fc.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        widths: each stage's inner width (its output is ``width * block.expansion``).
        stem_width: output channels of the stem conv.
        num_classes: outputs of the fc layer.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int] = (2, 2),
        widths: Sequence[int] = (8, 16),
        stem_width: int = 8,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Module] = []
        channels = stem_width
        for index, (count, width) in enumerate(zip(layers, widths)):
            blocks: list[nn.Module] = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        logits: Tensor = self.fc(torch.flatten(x, 1))
        return logits


def build_resnet_basic() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """ResNet with BasicBlocks (stages 8 and 16 wide, 2 blocks each), 3x32x32 input."""
    return ResNet(BasicBlock, layers=(2, 2), widths=(8, 16), stem_width=8), _images(3, 32)


def build_resnet_bottleneck() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """ResNet with Bottlenecks (inner 4 and 8, out 16 and 32, 2 blocks each), 3x32x32 input."""
    return ResNet(Bottleneck, layers=(2, 2), widths=(4, 8), stem_width=8), _images(3, 32)


# --- MobileNetV2 ------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand-BN-ReLU6 (absent at ratio 1), depthwise 3x3-BN-ReLU6, 1x1 project-BN.

    The depthwise conv has ``groups == hidden`` channels and ``hidden * multiplier``
    outputs (torchvision uses multiplier 1). The input is added back when the
    block keeps the resolution and the width.

    Args:
        in_channels: input channels.
        out_channels: output channels of the projection.
        stride: stride of the depthwise conv.
        expand_ratio: hidden width over ``in_channels``; 1 leaves out the expand conv.
        multiplier: outputs of the depthwise conv per input channel.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, multiplier: int = 1
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand: nn.Sequential | None = None
        if expand_ratio != 1:
            self.expand = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)
            )
        depthwise_out = hidden * multiplier
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, depthwise_out, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(depthwise_out),
            nn.ReLU6(inplace=True),
        )
        self.project = nn.Sequential(
            nn.Conv2d(depthwise_out, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        result: Tensor = x + out if self.use_residual else out
        return result


class MobileNetV2(nn.Module):
    """A small MobileNetV2: stem, four inverted residual blocks, 1x1 head conv, avgpool, dropout, linear.

    The blocks: ratio 1 with a residual (no expand conv), ratio 4 at stride 2,
    ratio 4 with a residual, and ratio 2 with depthwise multiplier 2.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, stride=1, expand_ratio=1),
            InvertedResidual(8, 12, stride=2, expand_ratio=4),
            InvertedResidual(12, 12, stride=1, expand_ratio=4),
            InvertedResidual(12, 16, stride=1, expand_ratio=2, multiplier=2),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        logits: Tensor = self.classifier(torch.flatten(x, 1))
        return logits


def build_mobilenet_v2() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """MobileNetV2 at widths 8 to 32, 3x32x32 input."""
    return MobileNetV2(), _images(3, 32)


# --- DenseNet ---------------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """DenseNet's layer: BN-ReLU-3x3 conv producing ``growth`` new channels."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(self.relu(self.norm(x)))
        return out


class DenseBlock(nn.Module):
    """DenseNet's block: each layer sees the concatenation (dim 1) of the input and every earlier layer's output."""

    def __init__(self, in_channels: int, growth: int, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + index * growth, growth) for index in range(count))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class Transition(nn.Module):
    """DenseNet's transition: BN, ReLU, 1x1 conv (compression), 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.pool(self.conv(self.relu(self.norm(x))))
        return out


class DenseNetBlock(nn.Module):
    """Stem conv, one dense block (8 + 3x4 = 20 channels), a transition to 10, BN-ReLU, avgpool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = DenseBlock(8, growth=4, count=3)
        self.transition = Transition(20, 10)
        self.norm = nn.BatchNorm2d(10)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(10, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(self.block(self.stem(x)))
        x = self.pool(self.relu(self.norm(x)))
        logits: Tensor = self.classifier(torch.flatten(x, 1))
        return logits


def build_densenet_block() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """DenseNet block, transition and classifier, 3x32x32 input."""
    return DenseNetBlock(), _images(3, 32)


# --- U-Net ------------------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    """U-Net's unit: two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(in_channels, out_channels), _conv_bn_relu(out_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.convs(x)
        return out


class UNet(nn.Module):
    """A 2-level U-Net (8, 16, bottleneck 32): transposed-conv upsampling, skip concatenated along dim 1.

    The output is a per-pixel score map, ``B x num_classes x H x W``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.enc1 = DoubleConv(in_channels, 8)
        self.enc2 = DoubleConv(8, 16)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = DoubleConv(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = DoubleConv(16, 8)
        self.out = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skip1 = self.enc1(x)
        skip2 = self.enc2(self.pool(skip1))
        x = self.bottleneck(self.pool(skip2))
        x = self.dec2(torch.cat([self.up2(x), skip2], dim=1))
        x = self.dec1(torch.cat([self.up1(x), skip1], dim=1))
        scores: Tensor = self.out(x)
        return scores


def build_unet() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """U-Net with 2 output classes, 3x32x32 input, 2x32x32 output."""
    return UNet(), _images(3, 32)


# --- VGG --------------------------------------------------------------------------------------------------------


class VGG(nn.Module):
    """A small VGG: conv-BN-ReLU and maxpools per ``cfg``, ``torch.flatten(x, 1)`` (no adaptive pool), MLP head.

    The flatten keeps the spatial positions (32 channels x 4 x 4 at 32x32 input), so each
    channel of the last conv feeds 16 consecutive columns of the first linear layer.

    Args:
        cfg: output widths of the convs; ``"M"`` is a 2x2 maxpool.
        image_size: height and width of the input.
        num_classes: outputs of the last linear layer.
    """

    def __init__(
        self, cfg: Sequence[int | str] = (8, "M", 16, 16, "M", 32, "M"), image_size: int = 32, num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 3, image_size
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                width = int(item)
                layers.append(_conv_bn_relu(channels, width))
                channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * size * size, 32), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(32, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.features(x), 1)
        logits: Tensor = self.classifier(x)
        return logits


def build_vgg() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """VGG ending in a 32x4x4 flatten, 3x32x32 input."""
    return VGG(), _images(3, 32)


# --- ViT --------------------------------------------------------------------------------------------------------


class ViTBlock(nn.Module):
    """A pre-norm encoder block: LN, multi-head self-attention, add; LN, Linear-GELU-Linear, add."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        result: Tensor = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return result


class ViT(nn.Module):
    """A tiny ViT: patch-embedding conv, a learnable class token and position embedding, encoder blocks, LN, head.

    Args:
        image_size: height and width of the input (a multiple of ``patch``).
        patch: side of a patch, the kernel and stride of the embedding conv.
        dim: embedding width.
        heads: attention heads.
        depth: encoder blocks.
        mlp_dim: hidden width of the blocks' MLP.
        num_classes: outputs of the head.
    """

    def __init__(
        self,
        image_size: int = 16,
        patch: int = 4,
        dim: int = 32,
        heads: int = 4,
        depth: int = 2,
        mlp_dim: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        # random, not zero (timm draws these from N(0, 0.02)): a zero token would hide slicing mistakes
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        logits: Tensor = self.head(x[:, 0])
        return logits


def build_vit() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """ViT with embed 32, 4 heads, 2 blocks, patch 4 on a 3x16x16 input (16 patches + the class token)."""
    return ViT(), _images(3, 16)


# --- ResNeXt ----------------------------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """ResNeXt's bottleneck: 1x1 reduce, grouped 3x3 (``groups`` paths), 1x1 expand, plus the (downsampled) input.

    Args:
        in_channels: input channels.
        width: channels of the grouped conv (a multiple of ``groups``).
        out_channels: output channels.
        stride: stride of the grouped conv.
        groups: groups of the 3x3 conv.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


class ResNeXt(nn.Module):
    """A small ResNeXt: stem, three blocks with 4 groups (4 then 8 channels a group), avgpool, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, 16), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(
            ResNeXtBlock(16, 16, 32),
            ResNeXtBlock(32, 16, 32),
            ResNeXtBlock(32, 32, 64, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.blocks(self.stem(x)))
        logits: Tensor = self.fc(torch.flatten(x, 1))
        return logits


def build_resnext() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """ResNeXt with 4-group 3x3 convs, 3x32x32 input."""
    return ResNeXt(), _images(3, 32)


# --- cat / split / chunk ----------------------------------------------------------------------------------------


class CatSplitNet(nn.Module):
    """Convs joined by ``torch.cat``, cut by ``torch.split([8, 16])`` and ``Tensor.chunk(2)``, gated by a product.

    Two branches (8 and 16 channels) are concatenated, mixed, split back into 8
    and 16, each widened to 16 and concatenated again (32); a 1x1 conv's output is
    chunked into two halves multiplied elementwise (16), then pooled into a linear.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.branch_a = nn.Conv2d(3, 8, 3, padding=1)
        self.branch_b = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(24, 24, 3, padding=1)
        self.conv_p = nn.Conv2d(8, 16, 3, padding=1)
        self.conv_q = nn.Conv2d(16, 16, 3, padding=1)
        self.gate = nn.Conv2d(32, 32, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([F.relu(self.branch_a(x)), F.relu(self.branch_b(x))], dim=1)
        p, q = torch.split(F.relu(self.mix(y)), [8, 16], dim=1)
        z = torch.cat([F.relu(self.conv_p(p)), F.relu(self.conv_q(q))], dim=1)
        u, v = self.gate(z).chunk(2, dim=1)
        logits: Tensor = self.fc(torch.flatten(self.pool(u * v), 1))
        return logits


def build_cat_split() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The cat/split/chunk net, 3x16x16 input."""
    return CatSplitNet(), _images(3, 16)


# --- LeNet and MLP ----------------------------------------------------------------------------------------------


def build_lenet() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The tutorial's ``pruneplug.models.LeNet``, 1x28x28 input."""
    return LeNet(), _images(1, 28)


class MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear, the smallest model for quick unit tests."""

    def __init__(self, in_features: int = 20, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        logits: Tensor = self.fc3(x)
        return logits


def build_mlp() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """MLP 20 -> 32 -> 32 -> 10 on 20 input features."""
    return MLP(), (torch.randn(BATCH, 20),)


# --- EXTRA: layers with rules of their own ----------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation (torchvision's layout, 1x1 convs as the fcs): ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(self.avgpool(x)))))
        return x * scale


class SENet(nn.Module):
    """Conv-BN-ReLU, a squeeze-excitation on its 16 channels, another conv, avgpool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(3, 16)
        self.se = SqueezeExcitation(16, 4)
        self.conv2 = _conv_bn_relu(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.se(self.conv1(x)))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def build_se_block() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """Squeeze-excitation net, 3x16x16 input."""
    return SENet(), _images(3, 16)


class GroupNormNet(nn.Module):
    """Two convs each followed by ``GroupNorm(4, C)`` and ReLU, avgpool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.norm1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.norm2 = nn.GroupNorm(4, 32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def build_groupnorm_net() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """GroupNorm net, 3x16x16 input."""
    return GroupNormNet(), _images(3, 16)


class Conv1dNet(nn.Module):
    """1-D signals: Conv1d-BN1d-ReLU twice (the second at stride 2), average pool over time, linear."""

    def __init__(self, in_channels: int = 2, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, 8, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 16, 5, stride=2, padding=2, bias=False)
        self.bn2 = nn.BatchNorm1d(16)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def build_conv1d_net() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """Conv1d net on 2-channel signals of length 64."""
    return Conv1dNet(), (torch.randn(BATCH, 2, 64),)


class InstanceNormNet(nn.Module):
    """Two convs each followed by ``InstanceNorm2d(C, affine=True)`` and ReLU, avgpool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(8, affine=True)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(16, affine=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def build_instancenorm_net() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """InstanceNorm net, 3x16x16 input."""
    return InstanceNormNet(), _images(3, 16)


class PReLUNet(nn.Module):
    """Two convs each followed by a per-channel ``PReLU(num_parameters=C)``, avgpool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.PReLU(num_parameters=8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = nn.PReLU(num_parameters=16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def build_prelu_net() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """PReLU net, 3x16x16 input."""
    return PReLUNet(), _images(3, 16)


class EmbeddingMLP(nn.Module):
    """``Embedding(100, 16)`` of ``B x 8`` token ids, summed over the tokens (dim 1), then Linear-ReLU-Linear.

    The embedding's channels are its last dim, so the sum over dim 1 keeps them apart.
    """

    def __init__(self, vocabulary: int = 100, dim: int = 16, hidden: int = 32, num_classes: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens).sum(dim=1)
        logits: Tensor = self.fc2(F.relu(self.fc1(x)))
        return logits


def build_embedding_mlp() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """Embedding MLP on ``B x 8`` int64 token ids below 100."""
    return EmbeddingMLP(), (torch.randint(0, 100, (BATCH, 8), dtype=torch.int64),)


ZOO: dict[str, Builder] = {
    "resnet_basic": build_resnet_basic,
    "resnet_bottleneck": build_resnet_bottleneck,
    "mobilenet_v2": build_mobilenet_v2,
    "densenet_block": build_densenet_block,
    "unet": build_unet,
    "vgg": build_vgg,
    "vit": build_vit,
    "resnext": build_resnext,
    "cat_split": build_cat_split,
    "lenet": build_lenet,
    "mlp": build_mlp,
}
"""The issue's architectures, by name: each builder returns ``(model, example_inputs)``."""

EXTRA: dict[str, Builder] = {
    "se_block": build_se_block,
    "groupnorm_net": build_groupnorm_net,
    "conv1d_net": build_conv1d_net,
    "instancenorm_net": build_instancenorm_net,
    "prelu_net": build_prelu_net,
    "embedding_mlp": build_embedding_mlp,
}
"""Models built around one layer kind each that needs its own channel rule."""
