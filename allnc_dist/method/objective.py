"""The full training objective: L = L_GBBN + w_t (lambda_h L_HyCon + lambda_p L_P2P).

One object holds everything a step needs besides the network: the classification loss, and one
global class-mean tracker per branch. HyCon and P2P are applied to each branch's features and
classifier, and combined over the branches with equal weights, or with GBBN's alpha_t and 1 - alpha_t
(`method.aux.branch_weights`), so that they do not dominate the re-balancing branch late in training.
w_t ramps from 0 to 1 over `method.aux.warmup_epochs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import MethodConfig
from .class_means import ClassMeans, ClassMeanTracker, GlobalBatch, at_least_fp32, gather_global_batch
from .classification import ClassificationLoss
from .collectives import world_size
from .network import NetworkOutput
from .hycon import hycon_loss
from .p2p import p2p_loss, p2p_target


@dataclass
class LossParts:
    total: torch.Tensor
    classification: torch.Tensor
    hycon: torch.Tensor
    p2p: torch.Tensor

    def values(self) -> dict[str, float]:
        # One read-back for all four parts: each float() alone is a device sync on GPU.
        names = ("total", "classification", "hycon", "p2p")
        return dict(zip(names, torch.stack([getattr(self, name).detach() for name in names]).tolist()))


class AllNCObjective:
    def __init__(
        self,
        cfg: MethodConfig,
        class_counts: Sequence[int],
        feature_dim: int,
        num_branches: int,
        total_epochs: int,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.group = cfg, group
        self.num_classes = len(class_counts)
        self.classification = ClassificationLoss(cfg, class_counts, total_epochs)
        self.trackers = [
            ClassMeanTracker(self.num_classes, feature_dim, cfg.class_means.beta, cfg.class_means.sync, group, device)
            for _ in range(num_branches if cfg.uses_class_means else 0)
        ]

    def __call__(
        self,
        out: NetworkOutput,
        labels: torch.Tensor,
        labels_rebalanced: torch.Tensor | None,
        alpha: float,
        epoch: float,
    ) -> LossParts:
        classification = self.gbbn_loss(out, labels, labels_rebalanced, alpha, epoch)
        zero = classification.new_zeros(())
        if not self.trackers:
            return LossParts(classification, classification, zero, zero)
        branch_labels = [labels, labels if labels_rebalanced is None else labels_rebalanced]
        terms = [self.allnc_terms(out, branch, branch_labels[branch]) for branch in range(len(self.trackers))]
        weights = self.branch_weights(alpha)
        hycon = sum(w * h for w, (h, _) in zip(weights, terms))
        p2p = sum(w * p for w, (_, p) in zip(weights, terms))
        auxiliary = self.cfg.hycon.weight * hycon + self.cfg.p2p.weight * p2p
        total = classification + self.warmup(epoch) * auxiliary
        return LossParts(total, classification, hycon, p2p)

    def branch_weights(self, alpha: float) -> list[float]:
        """How HyCon and P2P of each branch combine: 1/2 each, or alpha and 1 - alpha (aux.branch_weights)."""
        if len(self.trackers) == 1:
            return [1.0]
        if self.cfg.aux.branch_weights == "alpha":
            return [alpha, 1.0 - alpha]
        return [0.5, 0.5]

    def warmup(self, epoch: float) -> float:
        """The auxiliary losses' ramp: epoch / aux.warmup_epochs, capped at 1."""
        warmup = self.cfg.aux.warmup_epochs
        return 1.0 if warmup == 0 else min(1.0, epoch / warmup)

    def gbbn_loss(
        self, out: NetworkOutput, labels: torch.Tensor, labels_rebalanced: torch.Tensor | None, alpha: float, epoch: float
    ) -> torch.Tensor:
        logits = at_least_fp32(out.logits)
        if len(out.features) == 1:
            return self.classification(logits, labels, epoch)
        if labels_rebalanced is None:  # re-balancing by loss on the uniform batch
            second = self.classification.rebalanced(logits, labels, epoch)
        else:
            second = self.classification(logits, labels_rebalanced, epoch)
        return alpha * self.classification(logits, labels, epoch) + (1.0 - alpha) * second

    def allnc_terms(self, out: NetworkOutput, branch: int, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = at_least_fp32(out.features[branch])
        global_batch = None
        # Every worker computes HyCon over the global batch, so its value and gradient are the
        # single-worker ones; 'local' trades that for no all-gather.
        if self.cfg.hycon.weight > 0 and self.cfg.hycon.negatives != "local" and world_size(self.group) > 1:
            global_batch = gather_global_batch(features, labels, self.group)
        means = self.trackers[branch].update(features, labels, global_batch)
        anchors = global_batch or GlobalBatch(features, labels)
        hycon = self.hycon(anchors, means, out.projections[branch]) if self.cfg.hycon.weight > 0 else features.new_zeros(())
        p2p = self.p2p(means, at_least_fp32(out.classifier_weights[branch])) if self.cfg.p2p.weight > 0 else features.new_zeros(())
        return hycon, p2p

    def hycon(self, anchors: GlobalBatch, means: ClassMeans, projection: torch.nn.Module | None) -> torch.Tensor:
        centre = means.centre
        project = projection if projection is not None else (lambda v: v)
        embeddings = F.normalize(project(anchors.features - centre), dim=1)
        prototypes = F.normalize(project(means.means - centre), dim=1)
        return hycon_loss(
            embeddings,
            anchors.labels,
            prototypes,
            means.seen,
            self.cfg.hycon.tau,
            use_samples=self.cfg.hycon.negatives != "prototypes",
        )

    def p2p(self, means: ClassMeans, classifier: torch.Tensor) -> torch.Tensor:
        seen_means = means.seen_rows(means.means) - means.centre
        seen_classifier = means.seen_rows(classifier)
        return p2p_loss(seen_means, seen_classifier - seen_classifier.mean(0), self.cfg.p2p.tau, self.cfg.p2p.form)

    @property
    def geometry_target(self) -> str | None:
        """What P2P drives the class means and classifiers towards (None without P2P); see `p2p_target`."""
        if self.cfg.p2p.weight == 0 or not self.trackers:
            return None
        return p2p_target(self.num_classes, self.trackers[0].dim, self.cfg.p2p.form)

    def state_dict(self) -> dict:
        return {"trackers": [t.state_dict() for t in self.trackers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["trackers"]) != len(self.trackers):
            raise ValueError(f"checkpoint has {len(state['trackers'])} class-mean trackers, this run {len(self.trackers)}")
        for tracker, tracker_state in zip(self.trackers, state["trackers"]):
            tracker.load_state_dict(tracker_state)
