"""Evaluation: top-1 overall and Many / Medium / Few on the evaluated split (test, or val with
train.eval_split=val), and the Neural-Collapse geometry of the network as it predicts (both
branches at alpha = test_alpha).

The geometry is measured on the concatenation of the branch features, against the concatenation of
the branch classifiers: the mixed logits alpha W_c f_c + (1 - alpha) W_r f_r are exactly that
representation's logits (up to the branch scales), so it is the geometry that makes the predictions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..method.network import BranchedNetwork
from ..metrics import (
    SumOverRanks,
    accuracy_per_class,
    branch_nc3,
    class_hits,
    class_splits,
    nc_metrics_and_means,
    one_process,
    split_accuracies,
)


@dataclass
class Outputs:
    logits: torch.Tensor
    features: torch.Tensor  # branch features, concatenated
    labels: torch.Tensor


@torch.no_grad()
def collect_outputs(
    model: BranchedNetwork,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    alpha: float,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> Outputs:
    was_training = model.training
    model.eval()
    logits, features, labels = [], [], []
    for images, targets in loader:
        with autocast or contextlib.nullcontext():
            out = model(images.to(device), None, alpha)
        logits.append(out.logits.float().cpu())
        features.append(torch.cat([f.float() for f in out.features], dim=1).cpu())
        labels.append(targets)
    model.train(was_training)
    labels = torch.cat(labels)
    kept = labels >= 0  # a negative label marks a padding sample (engine/streams.py)
    return Outputs(torch.cat(logits)[kept], torch.cat(features)[kept], labels[kept])


def branch_classifiers(model: BranchedNetwork) -> list[torch.Tensor]:
    """Each branch's (K, D) classifier, detached, in fp32 on the CPU."""
    return [clf.weight.detach().float().cpu() for clf in model.classifiers]


def inference_classifier(model: BranchedNetwork) -> torch.Tensor:
    """The branch classifiers side by side, (K, num_branches * D)."""
    return torch.cat(branch_classifiers(model), dim=1)


def centred_nc3(model: BranchedNetwork, means: torch.Tensor) -> dict[str, float]:
    """NC3 per branch with centred classifier and means (what P2P aligns), and its mean over branches:
    nc3_centred, plus nc3_centred_conventional / _rebalancing with two branches."""
    values = branch_nc3(means, branch_classifiers(model))
    metrics = {"nc3_centred": sum(values) / len(values)}
    if len(values) == 2:
        metrics.update(nc3_centred_conventional=values[0], nc3_centred_rebalancing=values[1])
    return metrics


@dataclass
class Evaluation:
    metrics: dict[str, float]
    classifier: torch.Tensor  # (K, D_total), for plots
    class_means: torch.Tensor  # (K, D_total) training-set means, for plots
    per_class_accuracy: torch.Tensor  # (K,) percent on the evaluated split, for plots


def evaluate(
    model: BranchedNetwork,
    test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    train_eval_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    class_counts: Sequence[int],
    alpha: float,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    sum_over_ranks: SumOverRanks = one_process,
) -> Evaluation:
    """The metrics of the samples the loaders yield; with `sum_over_ranks`, of the samples every rank's
    loaders yield (each rank its own share of the splits): every count and sum is added up over the
    ranks, so every rank gets the metrics of the whole splits."""
    splits, num_classes = class_splits(class_counts), len(class_counts)
    test = collect_outputs(model, test_loader, alpha, device, autocast)
    hits, totals = (sum_over_ranks(counts) for counts in class_hits(test.logits.argmax(1), test.labels, num_classes))
    metrics = {f"acc_{k}": v for k, v in split_accuracies(hits, totals, splits).items()}
    train = collect_outputs(model, train_eval_loader, alpha, device, autocast)
    classifier = inference_classifier(model)
    collapse, means = nc_metrics_and_means(train.features, train.labels, classifier, splits["few"], sum_over_ranks)
    metrics.update(collapse)
    metrics.update(centred_nc3(model, means))
    return Evaluation(metrics, classifier, means.float(), accuracy_per_class(hits, totals))
