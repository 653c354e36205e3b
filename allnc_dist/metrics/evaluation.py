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


def class_hits(predictions: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(K,) correct predictions and (K,) samples of each class, as int64 counts (which sum exactly over ranks)."""
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must both be (N,), got {tuple(predictions.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.cpu()
    correct = predictions.cpu() == labels
    return torch.bincount(labels[correct], minlength=num_classes), torch.bincount(labels, minlength=num_classes)


def _accuracy_percent(hits: Tensor, totals: Tensor) -> float:
    """100 * sum(hits) / sum(totals); NaN when there is no sample to average."""
    total = int(totals.sum())
    return 100.0 * int(hits.sum()) / total if total else float("nan")


def split_accuracies(hits: Tensor, totals: Tensor, splits: dict[str, Sequence[int]]) -> dict[str, float]:
    """Top-1 accuracy in percent from per-class counts (`class_hits`), overall ("top1") and per split:
    over the samples whose label is in the split; NaN when the split has no such sample."""
    accuracies = {"top1": _accuracy_percent(hits, totals)}
    for name, classes in splits.items():
        chosen = torch.as_tensor(list(classes), dtype=torch.long)
        accuracies[name] = _accuracy_percent(hits[chosen], totals[chosen])
    return accuracies


def accuracy_by_split(predictions: Tensor, labels: Tensor, splits: dict[str, Sequence[int]]) -> dict[str, float]:
    """Top-1 accuracy in percent, overall ("top1") and per split (one key per key of `splits`).

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices of the test samples.
        splits: split name -> class indices, e.g. from `class_splits`.

    A split's accuracy is over the test samples whose label is in the split; it is NaN when the
    split has no such sample (e.g. no Few class at all).
    """
    in_splits = [int(k) for classes in splits.values() for k in classes]
    num_classes = 1 + max([*in_splits, int(labels.max()) if labels.numel() else 0])
    return split_accuracies(*class_hits(predictions, labels, num_classes), splits)


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K,) top-1 accuracy in percent of each class's test samples; NaN for a class with none."""
    return accuracy_per_class(*class_hits(predictions, labels, num_classes))


def accuracy_per_class(hits: Tensor, totals: Tensor) -> Tensor:
    """(K,) percent from per-class counts (`class_hits`); NaN for a class with no sample."""
    hits, totals = hits.double(), totals.double()
    return torch.where(totals > 0, 100.0 * hits / totals.clamp(min=1), torch.full_like(totals, float("nan")))
