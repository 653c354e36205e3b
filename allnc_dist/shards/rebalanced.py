"""The re-balanced stream of GBBN's re-balancing branch, read from the same shards by indexed random
access (design and costs: docs/rebalanced_stream.md).

Each position of a rank's epoch gets a class k with probability p_k (from per-epoch class quotas, so
that the epoch's class mix matches p closely), then one of class k's samples uniformly. p is the
tempered family p_k ∝ n_k^q over the non-empty classes: q = -1 is BBN's reversed sampler, 0
class-balanced, 0.5 square-root, 1 instance sampling. The sample's bytes come from one seek + read
at the offset index.json records: there is no scan and no reservoir. The draws come from (seed,
epoch, rank), so they do not depend on the loader workers, which share the positions as in the
uniform stream. Every rank yields exactly as many samples per epoch as the uniform stream (S), so a
`ShardLoader` over each zips batch for batch. Bad input is handled as in `ShardStream`.
"""

from __future__ import annotations

import numpy as np

from ..data.samplers import tempered_class_probabilities
from .epoch_plan import RandomStream, SamplePlan, samples_per_rank, seeded_rng
from .index import ShardIndex
from .samples import BadSamplePolicy
from .stream import ImageTransform, ShardStream

# Random draws rarely hit the same shard twice in a row: a handful of open files saves most re-opens
# of the shards just read without holding one descriptor per shard in every worker.
REBALANCED_OPEN_SHARDS = 16


class ClassTable:
    """Every sample's (shard, member) grouped by class, to draw samples of a given class."""

    def __init__(self, index: ShardIndex) -> None:
        labels = np.concatenate([shard.labels for shard in index.shards])
        shards = np.repeat(np.arange(len(index.shards)), index.shard_sizes)
        members = np.concatenate([np.arange(shard.samples) for shard in index.shards])
        by_class = np.argsort(labels, kind="stable")
        self.shards, self.members = shards[by_class], members[by_class]
        self.counts = np.bincount(labels, minlength=index.num_classes)
        self.starts = np.cumsum(self.counts) - self.counts

    def draw(self, classes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(shards, members) of one sample drawn uniformly within each of `classes` (non-empty)."""
        picks = self.starts[classes] + rng.integers(0, self.counts[classes])
        return self.shards[picks], self.members[picks]


def class_quotas(probabilities: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Draws per class for `length` positions by systematic sampling: each quota is the floor or
    the ceiling of length·p_k, its expectation exactly length·p_k, and the quotas sum to `length`."""
    cumulative = np.cumsum(probabilities)
    cumulative[-1] = 1.0  # exactly, so that the quotas add up to `length`
    return np.diff(np.floor(length * cumulative + rng.random()), prepend=0.0).astype(np.int64)


def rebalanced_plan(
    table: ClassTable, probabilities: np.ndarray, seed: int, epoch: int, rank: int, length: int
) -> SamplePlan:
    """`length` positions: the classes of the epoch's quotas in random order, then one sample drawn
    uniformly (with replacement) within each position's class.

    Each position's class is marginally p_k, as with independent draws, but the epoch's class mix is
    exact up to rounding (total variation < K / 2·length) instead of off by ~0.04 at length = 100·K.
    """
    rng = seeded_rng(RandomStream.REBALANCED, seed, epoch, rank)
    quotas = class_quotas(probabilities, length, rng)
    classes = rng.permutation(np.repeat(np.arange(len(probabilities)), quotas))
    return SamplePlan(*table.draw(classes, rng))


class RebalancedStream(ShardStream):
    """One rank's re-balanced stream, classes drawn with p_k ∝ n_k^q; iterate it through `ShardLoader`,
    like `ShardStream`.

    `samples_per_epoch` defaults to the uniform stream's S = ceil(N / W); pass the uniform stream's
    `samples_per_epoch` when that one is resampled.
    """

    open_shards = REBALANCED_OPEN_SHARDS

    def __init__(
        self,
        index: ShardIndex,
        q: float,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        transform: ImageTransform | None = None,
        samples_per_epoch: int | None = None,
        on_bad_sample: BadSamplePolicy = "raise",
        verify_checksums: bool = True,
    ) -> None:
        super().__init__(
            index, rank, world_size, seed, transform, on_bad_sample=on_bad_sample, verify_checksums=verify_checksums
        )
        self.q = q
        self.probabilities = tempered_class_probabilities(index.class_counts, q).numpy()
        self.table = ClassTable(index)
        if samples_per_epoch is None:
            samples_per_epoch = samples_per_rank(index.total_samples, self.world_size)
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self._samples_per_epoch = samples_per_epoch

    @property
    def samples_per_epoch(self) -> int:
        return self._samples_per_epoch

    @property
    def padding_per_epoch(self) -> int:
        """None: every position is an independent draw."""
        return 0

    def training_batches(self, batch_size: int) -> int:
        return self.samples_per_epoch // batch_size

    def class_probabilities(self) -> np.ndarray:
        """p_k, the probability that a position draws class k."""
        return self.probabilities.copy()

    def plan(self, epoch: int) -> SamplePlan:
        return rebalanced_plan(self.table, self.probabilities, self.seed, epoch, self.rank, self.samples_per_epoch)
