"""CIFAR ResNet-32 (He et al. 2016, section 4.2), split into a shared trunk and a last-stage branch.

A 3x3 stem with 16 channels, then three stages of 5 basic blocks with 16/32/64 channels; stages 2 and
3 halve the resolution. Trunk = stem + stages 1-2; branch = stage 3 + global average pool -> 64-d.

Shortcuts where the shape changes are option A (strided identity, zero-padded channels): it is what
the paper uses for CIFAR and what the LDAM/BBN baselines use, so parameter counts (0.46M) and results
stay comparable; it is also parameter-free and needs no norm layer, so the norm-free variant stays
free of any normalisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import conv3x3, conv_norm_relu, norm_layer, pooled

STEM_CHANNELS = 16
STAGE_CHANNELS = (16, 32, 64)
BLOCKS_PER_STAGE = 5  # depth 6n + 2 = 32
FEATURE_DIM = STAGE_CHANNELS[-1]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by `stride`, append zero channels up to `out_channels`."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class BasicBlock(nn.Module):
    """conv-norm-ReLU, conv-norm, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, norm, stride)
        self.norm1 = norm_layer(norm, out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, norm)
        self.norm2 = norm_layer(norm, out_channels)
        if norm == "none":
            # Without normalisation every residual sum would double the activation variance (2^15
            # over the network); a zero last conv makes each block start as the identity (SkipInit /
            # Fixup), so the norm-free network starts stable.
            nn.init.zeros_(self.conv2.weight)
        reshapes = stride != 1 or in_channels != out_channels
        self.shortcut = ZeroPadShortcut(out_channels, stride) if reshapes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet_stage(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Sequential:
    """BLOCKS_PER_STAGE basic blocks; the first one changes resolution and width."""
    blocks = [BasicBlock(in_channels, out_channels, stride, norm)]
    blocks += [BasicBlock(out_channels, out_channels, 1, norm) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


def build_trunk(in_channels: int, norm: str) -> nn.Sequential:
    """Stem + stages 1-2: images (B, C, H, W) -> (B, 32, H/2, W/2)."""
    return nn.Sequential(
        conv_norm_relu(in_channels, STEM_CHANNELS, norm),
        resnet_stage(STEM_CHANNELS, STAGE_CHANNELS[0], 1, norm),
        resnet_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[1], 2, norm),
    )


def build_branch(norm: str) -> nn.Sequential:
    """A freshly initialised stage 3 + global average pool: trunk feature maps -> (B, 64)."""
    return pooled(resnet_stage(STAGE_CHANNELS[1], STAGE_CHANNELS[2], 2, norm))
