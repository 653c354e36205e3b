"""Top-1 accuracy overall and on the Many / Medium / Few class splits of a long-tailed benchmark."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def class_splits(train_counts: Sequence[int], many_above: int = 100, few_below: int = 20) -> dict[str, list[int]]:
    """Split the classes by their number of TRAINING samples n_k.

    many: n_k > many_above; medium: few_below <= n_k <= many_above; few: n_k < few_below.
    The splits come from the counts, never from class index ranges, so they stay right for
    ImageNet-LT, whose classes are not sorted by frequency.
    """
    if few_below > many_above:
        raise ValueError(f"few_below ({few_below}) must not exceed many_above ({many_above})")
    splits: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for class_index, count in enumerate(train_counts):
        if count > many_above:
            splits["many"].append(class_index)
        elif count < few_below:
            splits["few"].append(class_index)
        else:
            splits["medium"].append(class_index)
    return splits


def _accuracy_percent(correct: Tensor) -> float:
    """Percentage of True entries; NaN when there is no entry to average."""
    if correct.numel() == 0:
        return float("nan")
    return 100.0 * correct.double().mean().item()


def accuracy_by_split(predictions: Tensor, labels: Tensor, splits: dict[str, Sequence[int]]) -> dict[str, float]:
    """Top-1 accuracy in percent, overall ("top1") and per split (one key per key of `splits`).

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices of the test samples.
        splits: split name -> class indices, e.g. from `class_splits`.

    A split's accuracy is over the test samples whose label is in the split; it is NaN when the
    split has no such sample (e.g. no Few class at all).
    """
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must both be (N,), got {tuple(predictions.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(predictions.device)
    correct = predictions == labels
    accuracies = {"top1": _accuracy_percent(correct)}
    for name, classes in splits.items():
        in_split = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype, device=labels.device))
        accuracies[name] = _accuracy_percent(correct[in_split])
    return accuracies


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K,) top-1 accuracy in percent of each class's test samples; NaN for a class with none."""
    labels = labels.to(predictions.device)
    correct = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels.cpu(), (predictions == labels).double().cpu())
    total = torch.bincount(labels.cpu(), minlength=num_classes).double()
    return torch.where(total > 0, 100.0 * correct / total.clamp(min=1), torch.full_like(total, float("nan")))
