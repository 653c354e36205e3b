"""Which samples each rank, and each of its DataLoader workers, reads in an epoch, planned before
anything is read. A `SamplePlan` lists, for one rank, the (shard, member) of every position of its
epoch; as every member's offset is in index.json, a pass can start at any position.

**Uniform epochs.** The shard order is a permutation drawn from (seed, epoch), the same on every
rank, and each shard's members are permuted from (seed, epoch, shard). Concatenated, they form the
epoch's global sequence of all N samples. Rank r reads positions r, r + W, r + 2W, ... of it, so the
ranks' shares differ in length by at most one, all ranks move through the shards together, and each
sample is read exactly once per epoch. The stride also makes the ranks' i-th batches of size B
together the i-th batch of size W·B of a single rank.

**Equal counts.** Every rank reads exactly S = ceil(N / W) positions per epoch. A rank whose share is
one short re-reads its own first sample as padding, so an epoch holds W·S − N ≤ W − 1 padding
samples in all. Training takes only the N // (W·B) global batches of real samples, the same count
for any W with the same W·B, so that an elastic run may change W inside an epoch (engine/streams.py).

**Resampled epochs.** Shards are drawn with replacement (weighted by their sample counts) from
(seed, epoch, rank), and each rank reads exactly `epoch_length` samples.

**Loader workers.** A rank's positions are dealt to its DataLoader workers in blocks, so that the
order of the positions, put back together, depends on (seed, epoch, rank) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

import numpy as np

from .index import ShardIndex


class RandomStream(IntEnum):
    """Independent random streams derived from the seed, one per purpose."""

    SHARD_ORDER = 0
    MEMBER_ORDER = 1
    RESAMPLED = 2
    REBALANCED = 3


def seeded_rng(stream: RandomStream, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(stream), *key])


@dataclass(frozen=True)
class SamplePlan:
    """What one rank reads in one epoch: position i reads member members[i] of shard shards[i]."""

    shards: np.ndarray  # int64
    members: np.ndarray  # int64, positions in tar order
    padding: int = 0  # trailing positions that re-read this rank's own first samples

    def __len__(self) -> int:
        return len(self.shards)


def samples_per_rank(total_samples: int, world_size: int) -> int:
    """S = ceil(N / W): what every rank yields in a uniform epoch."""
    return -(-total_samples // world_size)


def rank_share(total_samples: int, world_size: int, rank: int) -> int:
    """How many of the epoch's positions rank `rank` reads: those ≡ rank (mod world_size)."""
    return len(range(rank, total_samples, world_size))


def epoch_shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's shard order: the same on every rank and worker."""
    return seeded_rng(RandomStream.SHARD_ORDER, seed, epoch).permutation(num_shards)


def member_order(samples: int, seed: int, epoch: int, shard: int) -> np.ndarray:
    """The order in which an epoch reads a shard's members (a fresh mix of batches every epoch)."""
    return seeded_rng(RandomStream.MEMBER_ORDER, seed, epoch, shard).permutation(samples)


def global_sequence(index: ShardIndex, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(shards, members) of the epoch's global sequence: shards in the epoch's order, each one's
    members in its epoch's order."""
    order = epoch_shard_order(len(index.shards), seed, epoch)
    shards = np.repeat(order, index.shard_sizes[order])
    members = [member_order(index.shards[int(shard)].samples, seed, epoch, int(shard)) for shard in order]
    return shards.astype(np.int64), np.concatenate(members).astype(np.int64)


def uniform_plan(index: ShardIndex, seed: int, epoch: int, rank: int, world_size: int) -> SamplePlan:
    """Rank `rank`'s stride of the epoch, padded with its own first samples to S positions."""
    shards, members = global_sequence(index, seed, epoch)
    shards, members = shards[rank::world_size], members[rank::world_size]
    padding = samples_per_rank(index.total_samples, world_size) - len(shards)
    repeat = np.arange(padding) % len(shards)
    return SamplePlan(np.concatenate([shards, shards[repeat]]), np.concatenate([members, members[repeat]]), padding)


def resampled_plan(index: ShardIndex, seed: int, epoch: int, rank: int, length: int) -> SamplePlan:
    """`length` samples from whole shards drawn with replacement, weighted by their sample counts."""
    rng = seeded_rng(RandomStream.RESAMPLED, seed, epoch, rank)
    weights = index.shard_sizes / index.total_samples
    shards, members, total = [], [], 0
    while total < length:
        shard = int(rng.choice(len(index.shards), p=weights))
        take = rng.permutation(index.shards[shard].samples)[: length - total]
        shards.append(np.full(len(take), shard, dtype=np.int64))
        members.append(take)
        total += len(take)
    return SamplePlan(np.concatenate(shards), np.concatenate(members))


def worker_positions(start: int, end: int, worker: int, num_workers: int, block: int) -> Iterator[int]:
    """Positions [start, end) dealt out in blocks: block k goes to worker k mod num_workers."""
    for block_start in range(start + worker * block, end, num_workers * block):
        yield from range(block_start, min(block_start + block, end))
