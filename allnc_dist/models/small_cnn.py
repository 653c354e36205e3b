"""A small CNN for tiny images (8x8 digits, also 32x32).

Trunk: conv(in -> w), conv(w -> 2w), 2x2 max-pool. Branch: conv(2w -> 4w), global average pool,
so the features are 4w-dimensional (128 for the default w = 32).
"""

from __future__ import annotations

import torch.nn as nn

from .layers import conv_norm_relu, pooled


def feature_dim(width: int) -> int:
    return 4 * width


def build_trunk(in_channels: int, width: int, norm: str) -> nn.Sequential:
    """Images (B, C, H, W) -> (B, 2w, H/2, W/2)."""
    return nn.Sequential(
        conv_norm_relu(in_channels, width, norm),
        conv_norm_relu(width, 2 * width, norm),
        nn.MaxPool2d(2),
    )


def build_branch(width: int, norm: str) -> nn.Sequential:
    """A freshly initialised last stage: trunk feature maps -> (B, 4w) features."""
    return pooled(conv_norm_relu(2 * width, feature_dim(width), norm))
