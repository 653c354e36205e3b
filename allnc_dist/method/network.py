"""The network every method trains: a trunk and one or two branches (GBBN, the generalised
bilateral-branch network, after BBN, Zhou et al. 2020).

A shared trunk feeds two branches, each with its own last stage and classifier. The conventional
branch sees a uniformly sampled batch, the re-balancing branch a re-balanced one (or, with
loss-based re-balancing, the same batch). Their logits are mixed by the cumulative weight alpha_t,
which moves training from feature learning (alpha = 1) to classifier re-balancing (alpha = 0):

    z = alpha W_c f_c(x_c) + (1 - alpha) W_r f_r(x_r)

With `gbbn.shared_stage` the two branches share one last stage and differ only in their classifiers
(the light bilateral network, at about CE's FLOPs per image). With one branch the network is a plain
trunk + stage + classifier (alpha is ignored).

With the fixed ETF classifier, each stage ends in a BatchNorm1d, as Yang et al. 2022 build ETF + DR:
post-ReLU features are non-negative, so without it they could not reach the ETF's negative cosines.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn as nn

from ..config import HyConConfig, MethodConfig, RunConfig
from ..models import Backbone, build_backbone
from .classifiers import build_classifier


def build_network(cfg: RunConfig, in_channels: int, num_classes: int) -> BranchedNetwork:
    return BranchedNetwork(build_backbone(cfg.model, in_channels), num_classes, cfg.method)


def build_stage(backbone: Backbone, classifier: str) -> nn.Module:
    """A freshly initialised last stage: trunk feature maps -> (B, D) features, as the classifier sees them.

    For the fixed ETF the pooled features pass an affine BatchNorm1d (Yang et al. 2022: BN, then L2
    normalisation, then the ETF), so they can take negative values and match the ETF's negative cosines.
    """
    stage = backbone.make_branch()
    if classifier == "etf":
        return nn.Sequential(stage, nn.BatchNorm1d(backbone.feature_dim))
    return stage


def build_projection(cfg: HyConConfig, dim: int) -> nn.Module:
    """HyCon's projection head, (N, dim) -> (N, cfg.projection_dim); the identity without a
    projection_dim or with HyCon off."""
    if cfg.projection_dim is None or cfg.weight == 0:
        return nn.Identity()
    if cfg.projection_head == "linear":
        # Bias-free and linear, so that it commutes with class means: P(mean h) = mean P(h).
        return nn.Linear(dim, cfg.projection_dim, bias=False)
    # BCL's MLP head without its BatchNorm, so that the K prototypes and the anchors pass the same
    # function (batch statistics would differ between the two). Unlike the linear head it does not
    # commute with class means: the objective applies it to the centred class means to get the prototypes.
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, cfg.projection_dim))


@dataclass
class NetworkOutput:
    logits: torch.Tensor  # (B, K): the alpha-mixed logits
    features: list[torch.Tensor]  # per branch (B, D); with a shared stage and one batch, the same tensor twice
    classifier_weights: list[torch.Tensor]  # per branch (K, D)
    projections: list[nn.Module | None]  # per branch, HyCon's optional projection


class BranchedNetwork(nn.Module):
    """The network of every method: trunk + one or two branches (classifier, optional HyCon projection), with one last stage per
    branch or one stage shared by both."""

    def __init__(self, backbone: Backbone, num_classes: int, method: MethodConfig) -> None:
        super().__init__()
        num_branches = 2 if method.gbbn.enabled else 1
        num_stages = 1 if method.gbbn.shared_stage else num_branches
        self.trunk = backbone.trunk
        self.stages = nn.ModuleList(build_stage(backbone, method.classifier) for _ in range(num_stages))
        self.classifiers = nn.ModuleList(
            build_classifier(method.classifier, backbone.feature_dim, num_classes, method.cosine_scale, method.etf_seed)
            for _ in range(num_branches)
        )
        self.projections = nn.ModuleList(
            build_projection(method.hycon, backbone.feature_dim) for _ in range(num_branches)
        )
        self.has_projection = not isinstance(self.projections[0], nn.Identity)
        self.feature_dim = backbone.feature_dim
        # Under ZeRO-3 a parameter holds its data only while a forward pass that uses it runs; the
        # runtime then sets this, and the forward hands out copies of the classifier weights for
        # P2P to read after it (gradients flow back through the copy).
        self.copies_classifier_weights = False

    @property
    def num_branches(self) -> int:
        return len(self.classifiers)

    @property
    def shares_stage(self) -> bool:
        return len(self.stages) < self.num_branches

    def forward(self, x: torch.Tensor, x_rebalanced: torch.Tensor | None = None, alpha: float = 1.0) -> NetworkOutput:
        """Training: x and x_rebalanced feed the two branches. Inference, or re-balancing by loss
        (x_rebalanced=None): both branches see x."""
        features = self.branch_features(x, x_rebalanced)
        mix = [1.0] if self.num_branches == 1 else [alpha, 1.0 - alpha]
        logits = sum(m * clf(f) for m, clf, f in zip(mix, self.classifiers, features))
        return NetworkOutput(
            logits=logits,
            features=features,
            classifier_weights=[clf.weight.clone() if self.copies_classifier_weights else clf.weight
                                for clf in self.classifiers],
            projections=[p if self.has_projection else None for p in self.projections],
        )

    def branch_features(self, x: torch.Tensor, x_rebalanced: torch.Tensor | None) -> list[torch.Tensor]:
        """Each branch's (B, D) features."""
        if x_rebalanced is None or self.num_branches == 1:
            return self.features_of_one_batch(x)
        return self.features_of_two_batches(x, x_rebalanced)

    def features_of_one_batch(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every branch sees x, through one pass of the trunk (and one of a shared stage)."""
        maps = self.trunk(x)
        if self.shares_stage:
            return [self.stages[0](maps)] * self.num_branches
        return [stage(maps) for stage in self.stages]

    def features_of_two_batches(self, x: torch.Tensor, x_rebalanced: torch.Tensor) -> list[torch.Tensor]:
        """x feeds the conventional branch, x_rebalanced the re-balancing one. Both batches pass the
        trunk (and a shared stage) in one pass on their concatenation; the result is split after."""
        sizes = [len(x), len(x_rebalanced)]
        maps = self.trunk(torch.cat([x, x_rebalanced]))
        if self.shares_stage:
            return list(self.stages[0](maps).split(sizes))
        return [stage(part) for stage, part in zip(self.stages, maps.split(sizes))]
