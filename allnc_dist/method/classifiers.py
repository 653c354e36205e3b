"""Classifier layers: learned linear (bias-free), cosine (normalised, scaled) and fixed simplex ETF."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .etf import simplex_etf


class LinearClassifier(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class CosineClassifier(LinearClassifier):
    """s * cos(h, w_k), the normalised classifier LDAM is defined on."""

    def __init__(self, dim: int, num_classes: int, scale: float) -> None:
        super().__init__(dim, num_classes)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T


class ETFClassifier(nn.Module):
    """A fixed simplex ETF, held as a buffer: seeded, hence identical on every worker; logits are cosines.

    Its features come batch-normalised from the network (network.build_stage), as Yang et al. 2022 build it.
    """

    def __init__(self, dim: int, num_classes: int, seed: int) -> None:
        super().__init__()
        self.register_buffer("weight", simplex_etf(num_classes, dim, seed=seed))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ self.weight.T


def build_classifier(kind: str, dim: int, num_classes: int, cosine_scale: float, etf_seed: int) -> nn.Module:
    if kind == "linear":
        return LinearClassifier(dim, num_classes)
    if kind == "cosine":
        return CosineClassifier(dim, num_classes, cosine_scale)
    if kind == "etf":
        return ETFClassifier(dim, num_classes, etf_seed)
    raise ValueError(f"method.classifier must be 'linear', 'cosine' or 'etf', got {kind!r}")
