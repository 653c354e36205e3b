"""`build_data`: the long-tailed dataset a `DataConfig` names."""

from __future__ import annotations

from typing import Callable

from ..config import DataConfig
from .cifar import build_cifar_lt
from .datasets import LongTailData
from .digits import build_digits_lt
from .synthetic import build_synthetic_lt

BUILDERS: dict[str, Callable[[DataConfig], LongTailData]] = {
    "digits_lt": build_digits_lt,
    "synthetic_lt": build_synthetic_lt,
    "cifar10_lt": build_cifar_lt,
    "cifar100_lt": build_cifar_lt,
}


def build_data(cfg: DataConfig) -> LongTailData:
    """Train (augmented), train_eval and test splits, with class counts and names, for `cfg.name`."""
    return BUILDERS[cfg.name](cfg)
