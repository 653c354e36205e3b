"""Long-tailed class-count profiles and seeded per-class subsampling.

The exponential profile is the one of Cao et al. (2019) used for CIFAR-10/100-LT: class k keeps
n_max * IR^(-k/(K-1)) images, so the head class keeps n_max and the tail class n_max / IR. The step
profile is the one of Fang et al. (2021), where minority collapse was found: the first half of the
classes keep n_max images, the rest n_max / IR. The ImageNet-LT profile is a synthetic stand-in with
ImageNet-LT's published shape (see `imagenet_lt_profile`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

# Products like 500 * (1/50) are integers in exact arithmetic but can land just below one in floating
# point; this nudge keeps floor() from dropping such a count by one.
FLOOR_TOLERANCE = 1e-9

IMAGENET_LT_CLASSES = 1000
IMAGENET_LT_MAX = 1280
# (position on the class axis, count) of the ImageNet-LT stand-in, log-linear in between. The splits'
# boundaries sit half-way between two classes, at the count that separates them: 101 (Many: > 100)
# between classes 384 and 385, 20 (Few: < 20) between 863 and 864. The knee at class 20 makes the
# head fall fast, as ImageNet-LT's does, and brings the total to ImageNet-LT's size.
IMAGENET_LT_ANCHORS = ((0.0, 1280.0), (20.0, 370.0), (384.5, 101.0), (863.5, 20.0), (999.0, 5.0))


def exponential_profile(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class counts n_k = floor(n_max * IR^(-k/(K-1))), k = 0..K-1, head class first."""
    if n_max < 1 or num_classes < 1 or imbalance_ratio < 1.0:
        raise ValueError(
            f"need n_max >= 1, num_classes >= 1, imbalance_ratio >= 1; "
            f"got {n_max}, {num_classes}, {imbalance_ratio}"
        )
    if num_classes == 1:
        return [n_max]
    decay = 1.0 / imbalance_ratio
    return [
        math.floor(n_max * decay ** (k / (num_classes - 1)) + FLOOR_TOLERANCE) for k in range(num_classes)
    ]


def step_profile(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """ceil(K/2) majority classes with n_max images, then minority classes with floor(n_max / IR),
    at least 1 (Fang et al. 2021's "step" imbalance, head first)."""
    if n_max < 1 or num_classes < 2 or imbalance_ratio < 1.0:
        raise ValueError(
            f"need n_max >= 1, num_classes >= 2, imbalance_ratio >= 1; "
            f"got {n_max}, {num_classes}, {imbalance_ratio}"
        )
    majority = (num_classes + 1) // 2
    minority_count = max(1, math.floor(n_max / imbalance_ratio + FLOOR_TOLERANCE))
    return [n_max] * majority + [minority_count] * (num_classes - majority)


def long_tail_counts(profile: str, n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Training images per class under data.profile (exponential, step or imagenet_lt), head first."""
    if profile == "exponential":
        return exponential_profile(n_max, num_classes, imbalance_ratio)
    if profile == "step":
        return step_profile(n_max, num_classes, imbalance_ratio)
    if profile != "imagenet_lt":
        raise ValueError(f"unknown data.profile {profile!r}: use exponential, step or imagenet_lt")
    if num_classes != IMAGENET_LT_CLASSES:
        raise ValueError(
            f"data.profile='imagenet_lt' has {IMAGENET_LT_CLASSES} classes, but the dataset has {num_classes}: "
            f"set data.num_classes={IMAGENET_LT_CLASSES} (synthetic-LT)"
        )
    return imagenet_lt_profile(n_max)


def log_linear_profile(anchors: Sequence[tuple[float, float]], num_classes: int) -> list[int]:
    """Per-class counts floor(n(k)), k = 0..K-1, where log n(k) is piecewise linear through the
    (position, count) anchors (positions increasing, the first at 0 and the last at K-1)."""
    positions = [position for position, _ in anchors]
    log_counts = [math.log(count) for _, count in anchors]
    interpolated = np.exp(np.interp(np.arange(num_classes), positions, log_counts))
    return [math.floor(count + FLOOR_TOLERANCE) for count in interpolated]


def imagenet_lt_profile(n_max: int = IMAGENET_LT_MAX) -> list[int]:
    """A 1000-class, head-first, non-increasing stand-in for ImageNet-LT's training counts.

    ImageNet-LT's own counts follow a Pareto draw we do not ship. This profile has its published
    shape: 1280 images down to 5, 115,760 in all (the real set: 115,846), and 385 Many (> 100) /
    479 Medium (20-100) / 136 Few (< 20) classes. Construction: log n(k) is piecewise linear through
    the anchors (class 0: 1280, class 20: 370, class 384.5: 101, class 863.5: 20, class 999: 5) and
    n_k = floor(n(k)); see IMAGENET_LT_ANCHORS. For n_max != 1280 every count is scaled by
    n_max / 1280 (floor, at least 1), which keeps the order but not the split sizes.
    """
    if n_max < 1:
        raise ValueError(f"need n_max >= 1, got {n_max}")
    counts = log_linear_profile(IMAGENET_LT_ANCHORS, IMAGENET_LT_CLASSES)
    return [max(1, count * n_max // IMAGENET_LT_MAX) for count in counts]


def shuffled_class_indices(labels: torch.Tensor, num_classes: int, seed: int) -> list[torch.Tensor]:
    """For each class, the indices of its samples in a seeded random order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ordered_labels = labels[order]
    return [order[ordered_labels == k] for k in range(num_classes)]


def take_per_class(class_indices: Sequence[torch.Tensor], counts: Sequence[int]) -> torch.Tensor:
    """The first counts[k] indices of each class's list, concatenated class by class."""
    for k, (indices, count) in enumerate(zip(class_indices, counts, strict=True)):
        if count > len(indices):
            raise ValueError(f"class {k} has {len(indices)} samples, cannot take {count}")
    return torch.cat([indices[:count] for indices, count in zip(class_indices, counts)])


def split_off_per_class(
    class_indices: Sequence[torch.Tensor], count: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The first `count` indices of each class's list (concatenated class by class), and the rest of
    each list, for the next split to draw from."""
    held_out = take_per_class(class_indices, [count] * len(class_indices))
    return held_out, [indices[count:] for indices in class_indices]
