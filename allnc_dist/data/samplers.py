"""Re-balancing samplers for the second (re-balancing) branch of BBN-style training."""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import WeightedRandomSampler


def rebalanced_class_probabilities(
    class_counts: list[int], mode: Literal["reversed", "class_balanced"]
) -> torch.Tensor:
    """Target probability of drawing each class; empty classes get 0.

    'reversed' (BBN): p_k proportional to 1 / n_k. 'class_balanced': uniform over the non-empty classes.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    present = counts > 0
    if mode == "reversed":
        scores = torch.where(present, 1.0 / counts.clamp(min=1.0), 0.0)
    elif mode == "class_balanced":
        scores = present.to(torch.float64)
    else:
        raise ValueError(f"sampler mode must be 'reversed' or 'class_balanced', got {mode!r}")
    return scores / scores.sum()


def make_rebalanced_sampler(
    labels: torch.Tensor,
    class_counts: list[int],
    mode: Literal["reversed", "class_balanced"],
    num_samples: int,
    generator: torch.Generator,
) -> WeightedRandomSampler:
    """A with-replacement sampler whose class distribution follows `mode`.

    Each class's probability is spread uniformly over its samples (weight p_k / n_k per sample).
    """
    observed = torch.bincount(labels, minlength=len(class_counts)).tolist()
    if observed != list(class_counts):
        raise ValueError(f"class_counts {list(class_counts)} do not match the labels' counts {observed}")
    probabilities = rebalanced_class_probabilities(class_counts, mode)
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1.0)
    sample_weights = (probabilities / counts)[labels]
    return WeightedRandomSampler(sample_weights, num_samples, replacement=True, generator=generator)
