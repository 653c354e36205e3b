"""digits-LT: a long-tailed version of scikit-learn's bundled 8x8 digits (no download).

Each class's images are put in a seeded order; the first `test_per_class` form the balanced test
split, and the training split keeps the first n_k of the rest, n_k following the exponential profile
with n_max = the smallest per-class remainder (so every class can supply its count).
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from ..config import DataConfig
from .datasets import LongTailData, tensor_long_tail_data
from .profiles import exponential_profile, shuffled_class_indices, take_per_class

NUM_DIGITS = 10
# load_digits gives pixel intensities 0..16.
MAX_INTENSITY = 16.0


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as float images in [0, 1] (N x 1 x 8 x 8) and their labels."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / MAX_INTENSITY
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def digits_lt_split_indices(
    labels: torch.Tensor, test_per_class: int, imbalance_ratio: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the full digits set of the long-tailed training split and the balanced test split."""
    class_indices = shuffled_class_indices(labels, NUM_DIGITS, seed)
    smallest_class = min(len(indices) for indices in class_indices)
    if test_per_class >= smallest_class:
        raise ValueError(
            f"data.test_per_class={test_per_class} leaves no training images: the smallest digit class "
            f"has {smallest_class} images"
        )
    test = take_per_class(class_indices, [test_per_class] * NUM_DIGITS)
    pools = [indices[test_per_class:] for indices in class_indices]
    counts = exponential_profile(smallest_class - test_per_class, NUM_DIGITS, imbalance_ratio)
    return take_per_class(pools, counts), test


def build_digits_lt(cfg: DataConfig) -> LongTailData:
    images, labels = load_digit_images()
    train, test = digits_lt_split_indices(labels, cfg.test_per_class, cfg.imbalance_ratio, cfg.seed)
    return tensor_long_tail_data(
        images[train],
        labels[train],
        images[test],
        labels[test],
        class_names=[str(digit) for digit in range(NUM_DIGITS)],
        augment=cfg.augment,
    )
