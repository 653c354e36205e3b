"""Normalisation statistics of a shard set, read from the shards themselves.

Every rank computes them from the same evenly spaced samples, so all ranks normalise alike without a
collective. Up to `STATS_SAMPLES` images are read: all of a small set (then they equal the in-memory
dataset's statistics), an unbiased spread of a large one (the shards are a fair mix of classes).
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch

from ..data.datasets import channel_mean_std
from .index import ShardIndex
from .samples import OPEN_SHARDS, BadSampleError, BadSamplePolicy, SampleReader

logger = logging.getLogger(__name__)

STATS_SAMPLES = 4096


def spread_positions(index: ShardIndex, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(shards, members) of `count` samples evenly spaced over the set in shard and tar order."""
    picked = np.unique(np.linspace(0, index.total_samples - 1, min(count, index.total_samples)).round().astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(index.shard_sizes)])
    shards = np.searchsorted(starts, picked, side="right") - 1
    return shards, picked - starts[shards]


def shard_channel_stats(
    index: ShardIndex, on_bad_sample: BadSamplePolicy = "raise", verify: bool = True, max_samples: int = STATS_SAMPLES
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw (uint8, as in the shards) images of up to `max_samples` samples."""
    shards, members = spread_positions(index, max_samples)
    reader = SampleReader(index, verify, OPEN_SHARDS)
    skipped = 0

    def images() -> Iterator[torch.Tensor]:
        nonlocal skipped
        for shard, member in zip(shards.tolist(), members.tolist()):
            try:
                yield reader.read(shard, member).image.unsqueeze(0)
            except BadSampleError:
                if on_bad_sample == "raise":
                    raise
                skipped += 1

    try:
        stats = channel_mean_std(images())
    except ZeroDivisionError:
        raise BadSampleError(f"{index.root}: every sample read for the normalisation statistics is bad",
                             "no_good_sample") from None
    finally:
        reader.close()
    if skipped:
        logger.warning("normalisation statistics of %s: skipped %d bad samples of %d", index.root, skipped, len(shards))
    return stats
