"""Re-balancing samplers for the second (re-balancing) branch of BBN-style training.

One tempered family covers them all: class k is drawn with probability p_k ∝ n_k^q. q = 1 is
instance sampling (p_k = n_k / N), q = 0.5 square-root sampling (Kang et al. 2020), q = 0
class-balanced sampling (p_k = 1/K) and q = -1 BBN's reversed sampler (p_k ∝ 1/n_k).
"""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler


def tempered_class_probabilities(class_counts: list[int], q: float) -> torch.Tensor:
    """p_k = n_k^q / Σ_j n_j^q over the non-empty classes; empty classes get 0 (float64)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("every class is empty: there is nothing to draw")
    # Clamped before the power so that an empty class cannot raise 0 to a negative exponent.
    scores = torch.where(present, counts.clamp(min=1.0) ** q, 0.0)
    return scores / scores.sum()


def make_rebalanced_sampler(
    labels: torch.Tensor,
    class_counts: list[int],
    q: float,
    num_samples: int,
    generator: torch.Generator,
) -> WeightedRandomSampler:
    """A with-replacement sampler whose classes follow p_k ∝ n_k^q.

    Each class's probability is spread uniformly over its samples (weight p_k / n_k per sample).
    """
    observed = torch.bincount(labels, minlength=len(class_counts)).tolist()
    if observed != list(class_counts):
        raise ValueError(f"class_counts {list(class_counts)} do not match the labels' counts {observed}")
    probabilities = tempered_class_probabilities(class_counts, q)
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1.0)
    sample_weights = (probabilities / counts)[labels]
    return WeightedRandomSampler(sample_weights, num_samples, replacement=True, generator=generator)
