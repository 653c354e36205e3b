"""The unconstrained-features model (UFM): features and classifier are free parameters.

With the network abstracted away, only the loss and the weight decay shape the geometry, which makes
the UFM the standard place to see Neural Collapse and minority collapse (Fang et al. 2021). Here the
real `AllNCObjective` trains it, so the study tests the losses the trainer uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import MethodConfig
from ..method.gbbn import NetworkOutput
from ..method.objective import AllNCObjective


@dataclass
class UFMGeometry:
    few_cos_classifier: float
    few_cos_means: float
    few_self_duality: float


def _mean_offdiag_cosine(rows: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(rows, dim=1)
    cos = unit @ unit.T
    k = len(rows)
    return float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))


def train_unconstrained_features(
    class_counts: Sequence[int],
    method: MethodConfig,
    dim: int = 32,
    seed: int = 0,
    steps: int = 4000,
    lr: float = 0.1,
    weight_decay: float = 1e-2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-batch SGD on free features H (N, D) and classifier W (K, D); returns (H, labels, W)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(class_counts)), torch.as_tensor(class_counts))
    features = torch.nn.Parameter(0.1 * torch.randn(len(labels), dim, generator=generator))
    classifier = torch.nn.Parameter(0.1 * torch.randn(len(class_counts), dim, generator=generator))
    objective = AllNCObjective(method, class_counts, dim, num_branches=1, total_epochs=1)
    optimizer = torch.optim.SGD([features, classifier], lr=lr, momentum=0.9, weight_decay=weight_decay)
    for _ in range(steps):
        out = NetworkOutput(features @ classifier.T, [features], [classifier], [None])
        loss = objective(out, labels, None, alpha=1.0, epoch=0.0).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return features.detach(), labels, classifier.detach()
