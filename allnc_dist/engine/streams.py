"""Where an engine's batches come from: the uniform stream, paired with the re-balanced stream when
GBBN re-balances by sampler, plus the evaluation loaders.

`InMemoryStreams` serves a map-style `LongTailData`. Each epoch's draws are seeded from
(seed, epoch), so a resumed run replays exactly what an uninterrupted run draws.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import RunConfig
from ..data import LongTailData, make_rebalanced_sampler
from .step import Batch


def uses_rebalancing_sampler(cfg: RunConfig) -> bool:
    return cfg.method.gbbn.enabled and cfg.method.gbbn.rebalance in ("reversed", "class_balanced")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class TrainingStreams(Protocol):
    class_counts: list[int]
    image_shape: tuple[int, int, int]
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterator[Batch]: ...

    def eval_loaders(self) -> tuple[DataLoader, DataLoader]:
        """(test split, training split without augmentation)."""
        ...


class InMemoryStreams:
    def __init__(self, cfg: RunConfig, data: LongTailData) -> None:
        self.cfg, self.data = cfg, data
        self.class_counts = list(data.class_counts)
        self.image_shape = data.image_shape
        n, b = len(data.train), cfg.data.batch_size
        self.drop_last = n >= b
        self.steps_per_epoch = n // b if self.drop_last else 1

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.cfg.data.batch_size, num_workers=self.cfg.data.loader_workers,
                          **kwargs)

    def batches(self, epoch: int) -> Iterator[Batch]:
        seed = epoch_seed(self.cfg.data.seed, epoch)
        uniform = self._loader(self.data.train, shuffle=True, drop_last=self.drop_last,
                               generator=torch.Generator().manual_seed(seed))
        if not uses_rebalancing_sampler(self.cfg):
            return (Batch(x, y) for x, y in uniform)
        sampler = make_rebalanced_sampler(self.data.train_labels, self.class_counts, self.cfg.method.gbbn.rebalance,
                                          len(self.data.train), torch.Generator().manual_seed(seed + 7919))
        rebalanced = self._loader(self.data.train, sampler=sampler, drop_last=self.drop_last)
        return (Batch(x, y, xr, yr) for (x, y), (xr, yr) in zip(uniform, rebalanced))

    def eval_loaders(self) -> tuple[DataLoader, DataLoader]:
        return self._loader(self.data.test), self._loader(self.data.train_eval)
