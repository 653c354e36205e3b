"""The backbone of the two-branch network: a shared trunk and a factory of last-stage branches.

Each branch (BBN's conventional and re-balancing branch) needs its own, independently initialised
copy of the last stage, so the backbone hands out a factory rather than a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch.nn as nn

from ..config import ModelConfig
from . import resnet_cifar, resnet_torchvision, small_cnn


@dataclass
class Backbone:
    trunk: nn.Module  # images (B, C, H, W) -> feature maps
    # Builds a fresh last stage: feature maps -> (B, feature_dim) pooled features (after the last ReLU).
    # A partial of a module-level function, so the backbone stays picklable.
    make_branch: Callable[[], nn.Module]
    feature_dim: int


def build_backbone(cfg: ModelConfig, in_channels: int) -> Backbone:
    """The trunk and branch factory of `cfg.arch`, for images with `in_channels` channels."""
    if cfg.arch == "small_cnn":
        return Backbone(
            trunk=small_cnn.build_trunk(in_channels, cfg.width, cfg.norm),
            make_branch=partial(small_cnn.build_branch, cfg.width, cfg.norm),
            feature_dim=small_cnn.feature_dim(cfg.width),
        )
    if cfg.arch == "resnet32":
        return Backbone(
            trunk=resnet_cifar.build_trunk(in_channels, cfg.norm),
            make_branch=partial(resnet_cifar.build_branch, cfg.norm),
            feature_dim=resnet_cifar.FEATURE_DIM,
        )
    return Backbone(
        trunk=resnet_torchvision.build_trunk(cfg.arch, in_channels, cfg.norm),
        make_branch=partial(resnet_torchvision.build_branch, cfg.arch),
        feature_dim=resnet_torchvision.FEATURE_DIM,
    )
