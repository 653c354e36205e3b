"""Long-tailed class-count profiles and seeded per-class subsampling.

The exponential profile is the one of Cao et al. (2019) used for CIFAR-10/100-LT: class k keeps
n_max * IR^(-k/(K-1)) images, so the head class keeps n_max and the tail class n_max / IR.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# Products like 500 * (1/50) are integers in exact arithmetic but can land just below one in floating
# point; this nudge keeps floor() from dropping such a count by one.
FLOOR_TOLERANCE = 1e-9


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
