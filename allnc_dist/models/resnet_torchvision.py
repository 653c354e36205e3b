"""torchvision ResNet-50 / ResNeXt-50 (32x4d), randomly initialised, split for a two-branch head.

Trunk = conv1, bn1, relu, maxpool, layer1-3; branch = layer4 + average pool -> 2048-d. Weights are
never downloaded (`weights=None`): long-tailed benchmarks train from scratch.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from torchvision.models import ResNet, resnet50, resnext50_32x4d

from .layers import pooled

CONSTRUCTORS: dict[str, Callable[..., ResNet]] = {"resnet50": resnet50, "resnext50": resnext50_32x4d}
FEATURE_DIM = 2048  # layer4 outputs 512 x 4 (bottleneck expansion) channels


def _new_model(arch: str) -> ResNet:
    if arch not in CONSTRUCTORS:
        raise ValueError(f"model.arch must be one of {sorted(CONSTRUCTORS)}, got {arch!r}")
    return CONSTRUCTORS[arch](weights=None)


def _stem_conv(template: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """conv1 of `template`, for `in_channels` input channels, initialised as torchvision does."""
    conv = nn.Conv2d(
        in_channels, template.out_channels, template.kernel_size, template.stride, template.padding, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def build_trunk(arch: str, in_channels: int, norm: str) -> nn.Sequential:
    """Stem + layer1-3 of a fresh `arch`: images (B, C, H, W) -> (B, 1024, H/16, W/16)."""
    if norm != "batch":
        raise ValueError(
            f"model.norm={norm!r} is not supported for model.arch={arch!r}: "
            "torchvision ResNets support only 'batch'"
        )
    model = _new_model(arch)
    conv1 = model.conv1 if in_channels == model.conv1.in_channels else _stem_conv(model.conv1, in_channels)
    return nn.Sequential(conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3)


def build_branch(arch: str) -> nn.Sequential:
    """layer4 of a newly constructed `arch` (so each call is independently initialised) + pooling."""
    return pooled(_new_model(arch).layer4)
