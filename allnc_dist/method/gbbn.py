"""GBBN: the generalised bilateral-branch network (after BBN, Zhou et al. 2020).

A shared trunk feeds two branches, each with its own last stage and classifier. The conventional
branch sees a uniformly sampled batch, the re-balancing branch a re-balanced one (or, with
loss-based re-balancing, the same batch). Their logits are mixed by the cumulative weight alpha_t,
which moves training from feature learning (alpha = 1) to classifier re-balancing (alpha = 0):

    z = alpha W_c f_c(x_c) + (1 - alpha) W_r f_r(x_r)

With one branch the network is a plain trunk + stage + classifier (alpha is ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..config import GBBNConfig, MethodConfig
from .classifiers import build_classifier

if TYPE_CHECKING:
    from ..models import Backbone


def cumulative_alpha(epoch: float, total_epochs: int, cfg: GBBNConfig) -> float:
    """alpha_t at progress `epoch` (fractional epochs): parabolic 1-(t/T)^2, linear, cosine or step."""
    t = min(max(epoch / total_epochs, 0.0), 1.0)
    if cfg.schedule == "parabolic":
        return 1.0 - t**2
    if cfg.schedule == "linear":
        return 1.0 - t
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 if epoch < cfg.switch_epoch else 0.0


@dataclass
class NetworkOutput:
    logits: torch.Tensor  # (B, K): the alpha-mixed logits
    features: list[torch.Tensor]  # per branch (B, D)
    classifier_weights: list[torch.Tensor]  # per branch (K, D)
    projections: list[nn.Module | None]  # per branch, HyCon's optional projection


class GBBNNetwork(nn.Module):
    """Trunk + one or two branches (stage, classifier, optional HyCon projection)."""

    def __init__(self, backbone: "Backbone", num_classes: int, method: MethodConfig) -> None:
        super().__init__()
        num_branches = 2 if method.gbbn.enabled else 1
        self.trunk = backbone.trunk
        self.stages = nn.ModuleList(backbone.make_branch() for _ in range(num_branches))
        self.classifiers = nn.ModuleList(
            build_classifier(method.classifier, backbone.feature_dim, num_classes, method.cosine_scale, method.etf_seed)
            for _ in range(num_branches)
        )
        projection_dim = method.hycon.projection_dim if method.hycon.weight > 0 else None
        # Bias-free and linear, so that it commutes with class means: P(mean h) = mean P(h).
        self.projections = nn.ModuleList(
            nn.Linear(backbone.feature_dim, projection_dim, bias=False) if projection_dim else nn.Identity()
            for _ in range(num_branches)
        )
        self.has_projection = projection_dim is not None
        self.feature_dim = backbone.feature_dim

    @property
    def num_branches(self) -> int:
        return len(self.stages)

    def forward(self, x: torch.Tensor, x_rebalanced: torch.Tensor | None = None, alpha: float = 1.0) -> NetworkOutput:
        """Training: x and x_rebalanced feed the two branches. Inference (x_rebalanced=None): both
        branches see x, through one pass of the trunk."""
        if self.num_branches == 1:
            trunk_outputs = [self.trunk(x)]
            mix = [1.0]
        elif x_rebalanced is None:
            trunk_outputs = [self.trunk(x)] * 2
            mix = [alpha, 1.0 - alpha]
        else:
            shared = self.trunk(torch.cat([x, x_rebalanced]))
            trunk_outputs = list(shared.split([len(x), len(x_rebalanced)]))
            mix = [alpha, 1.0 - alpha]
        features = [stage(t) for stage, t in zip(self.stages, trunk_outputs)]
        logits = sum(m * clf(f) for m, clf, f in zip(mix, self.classifiers, features))
        return NetworkOutput(
            logits=logits,
            features=features,
            classifier_weights=[clf.weight for clf in self.classifiers],
            projections=[p if self.has_projection else None for p in self.projections],
        )
