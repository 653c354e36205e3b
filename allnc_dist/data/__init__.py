"""Long-tailed image datasets (digits-LT, synthetic-LT, CIFAR-10/100-LT) and re-balancing samplers."""

from .build import build_data
from .datasets import LongTailData
from .profiles import exponential_profile
from .samplers import make_rebalanced_sampler

__all__ = ["LongTailData", "build_data", "exponential_profile", "make_rebalanced_sampler"]
