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
from ..metrics import accuracy_by_split, branch_nc3, class_means, class_splits, nc_metrics, per_class_accuracy


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
    return Outputs(torch.cat(logits), torch.cat(features), torch.cat(labels))


def branch_classifiers(model: BranchedNetwork) -> list[torch.Tensor]:
    """Each branch's (K, D) classifier, detached, in fp32 on the CPU."""
    return [clf.weight.detach().float().cpu() for clf in model.classifiers]


def inference_classifier(model: BranchedNetwork) -> torch.Tensor:
    """The branch classifiers side by side, (K, num_branches * D)."""
    return torch.cat(branch_classifiers(model), dim=1)


def centred_nc3(model: BranchedNetwork, train: Outputs) -> dict[str, float]:
    """NC3 per branch with centred classifier and means (what P2P aligns), and its mean over branches:
    nc3_centred, plus nc3_centred_conventional / _rebalancing with two branches."""
    values = branch_nc3(train.features, train.labels, branch_classifiers(model))
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
) -> Evaluation:
    splits = class_splits(class_counts)
    test = collect_outputs(model, test_loader, alpha, device, autocast)
    predictions = test.logits.argmax(1)
    metrics = {f"acc_{k}": v for k, v in accuracy_by_split(predictions, test.labels, splits).items()}
    per_class = per_class_accuracy(predictions, test.labels, len(class_counts))
    train = collect_outputs(model, train_eval_loader, alpha, device, autocast)
    classifier = inference_classifier(model)
    metrics.update(nc_metrics(train.features, train.labels, classifier, few_classes=splits["few"]))
    metrics.update(centred_nc3(model, train))
    means = class_means(train.features, train.labels, len(class_counts))
    return Evaluation(metrics, classifier, means, per_class)
