"""The unconstrained-features model (UFM): features and classifier are free parameters.

With the network abstracted away, only the loss and the weight decay shape the geometry, which makes
the UFM the standard place to see Neural Collapse and minority collapse (Fang et al. 2021). Here the
real `AllNCObjective` trains it, so the study tests the losses the trainer uses.

The objective is (1/N) sum_i l_i + (wd/2) ||W||^2 + (wd_H/2) ||H||^2, trained by SGD, full batch or
on uniformly drawn mini-batches (weight decay on every parameter every step, so a mini-batch step is
an unbiased estimate of the full-batch one, bar the batch-dependent parts of HyCon and the class
means, which then behave as in real training).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..config import MethodConfig
from ..method.network import NetworkOutput
from ..method.objective import AllNCObjective


def ufm_training(
    class_counts: Sequence[int],
    method: MethodConfig,
    dim: int = 32,
    seed: int = 0,
    steps: int = 4000,
    lr: float = 0.1,
    weight_decay: float = 1e-2,
    batch_size: int | None = None,
    reference_size: int | None = None,
) -> Iterator[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Trains free features H (N, D) and classifier W (K, D); yields (loss, H, labels, W) after each step.

    batch_size: samples per step, drawn uniformly without replacement; None (or >= N) is full batch.
    reference_size: when set, the features' weight decay is wd * reference_size / N and their
        learning rate lr * N / reference_size. Each sample's loss weighs 1/N, so a fixed decay on the
        sum ||H||^2 grows N-fold against it: with wd = 1e-2, K = 10 and N above about 1000 the only
        minimiser is H = W = 0 (the balanced-UFM condition sqrt(wd_W wd_H K N) < 1 fails). The
        rescaling keeps, for every N, the per-sample balance and the per-feature speed of a set of
        reference_size samples; at N = reference_size nothing changes.
    H and W are live tensors (detached views of the parameters): clone them to keep a snapshot.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(class_counts)), torch.as_tensor(class_counts))
    n = len(labels)
    features = torch.nn.Parameter(0.1 * torch.randn(n, dim, generator=generator))
    classifier = torch.nn.Parameter(0.1 * torch.randn(len(class_counts), dim, generator=generator))
    scale = n / reference_size if reference_size else 1.0
    objective = AllNCObjective(method, class_counts, dim, num_branches=1, total_epochs=1)
    optimizer = torch.optim.SGD(
        [
            {"params": [features], "lr": lr * scale, "weight_decay": weight_decay / scale},
            {"params": [classifier], "lr": lr, "weight_decay": weight_decay},
        ],
        momentum=0.9,
    )
    full_batch = batch_size is None or batch_size >= n
    for _ in range(steps):
        batch = slice(None) if full_batch else torch.randperm(n, generator=generator)[:batch_size]
        batch_features = features[batch]
        out = NetworkOutput(batch_features @ classifier.T, [batch_features], [classifier], [None])
        loss = objective(out, labels[batch], None, alpha=1.0, epoch=0.0).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield loss.item(), features.detach(), labels, classifier.detach()


def train_unconstrained_features(
    class_counts: Sequence[int], method: MethodConfig, **training
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ufm_training` run to its end; returns the final (H, labels, W)."""
    for _, features, labels, classifier in ufm_training(class_counts, method, **training):
        pass
    return features, labels, classifier
