"""Building blocks shared by the small CNN and the CIFAR ResNet: norm layers, convolutions, pooling.

`norm` is `ModelConfig.norm`: 'batch', 'group' or 'none' (a normalisation-free model).
"""

from __future__ import annotations

import math

import torch.nn as nn

# Group count for GroupNorm. Wu & He (2018) use 32, but these models have as few as 16 channels;
# 8 groups keeps several channels per group. gcd() makes any channel count valid (e.g. odd widths).
GROUP_NORM_GROUPS = 8


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation layer after a convolution with `channels` outputs."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, GROUP_NORM_GROUPS), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be 'batch', 'group' or 'none', got {norm!r}")


def conv3x3(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> nn.Conv2d:
    """A Kaiming-initialised 3x3 convolution, 'same' padding.

    A bias is only needed without normalisation: a norm layer's own shift makes it redundant.
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=norm == "none")
    # fan_in mode keeps the forward activation scale, which matters most for the norm-free model.
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def conv_norm_relu(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(in_channels, out_channels, norm, stride), norm_layer(norm, out_channels), nn.ReLU(inplace=True)
    )


def pooled(stage: nn.Module) -> nn.Sequential:
    """`stage` followed by global average pooling: feature maps -> (B, C) features."""
    return nn.Sequential(stage, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
