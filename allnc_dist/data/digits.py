"""digits-LT: a long-tailed version of scikit-learn's bundled 8x8 digits (no download).

Each class's images are put in a seeded order; the first `test_per_class` form the balanced test
split, the next `val_per_class` the balanced validation split (none by default), and the training
split keeps the first n_k of the rest, n_k following data.profile (exponential by default) with
n_max = the smallest per-class remainder (so every class can supply its count). Test comes first, so it is the
same whatever val_per_class is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from sklearn.datasets import load_digits

from ..config import DataConfig
from .datasets import LongTailData, tensor_long_tail_data
from .profiles import long_tail_counts, shuffled_class_indices, split_off_per_class, take_per_class

NUM_DIGITS = 10
# load_digits gives pixel intensities 0..16.
MAX_INTENSITY = 16.0


class DigitsSplitIndices(NamedTuple):
    """Indices into the full digits set of each split (val is empty without a validation split)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as float images in [0, 1] (N x 1 x 8 x 8) and their labels."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / MAX_INTENSITY
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def digits_lt_split_indices(
    labels: torch.Tensor,
    test_per_class: int,
    imbalance_ratio: float,
    seed: int,
    val_per_class: int = 0,
    profile: str = "exponential",
) -> DigitsSplitIndices:
    """The long-tailed training split and the balanced validation and test splits, disjoint."""
    class_indices = shuffled_class_indices(labels, NUM_DIGITS, seed)
    smallest_class = min(len(indices) for indices in class_indices)
    held_out = test_per_class + val_per_class
    if held_out >= smallest_class:
        raise ValueError(
            f"data.test_per_class={test_per_class} + data.val_per_class={val_per_class} leaves no training "
            f"images: the smallest digit class has {smallest_class} images"
        )
    test, rest = split_off_per_class(class_indices, test_per_class)
    val, pools = split_off_per_class(rest, val_per_class)
    counts = long_tail_counts(profile, smallest_class - held_out, NUM_DIGITS, imbalance_ratio)
    return DigitsSplitIndices(take_per_class(pools, counts), val, test)


def build_digits_lt(cfg: DataConfig) -> LongTailData:
    images, labels = load_digit_images()
    split = digits_lt_split_indices(
        labels, cfg.test_per_class, cfg.imbalance_ratio, cfg.seed, cfg.val_per_class, cfg.profile
    )
    return tensor_long_tail_data(
        images[split.train],
        labels[split.train],
        images[split.test],
        labels[split.test],
        class_names=[str(digit) for digit in range(NUM_DIGITS)],
        augment=cfg.augment,
        val=(images[split.val], labels[split.val]) if cfg.val_per_class else None,
    )
