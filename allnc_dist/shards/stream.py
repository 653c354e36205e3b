"""One rank's stream of samples from a shard set (`ShardStream`), and one pass of it (`EpochPass`),
the IterableDataset a DataLoader iterates.

A stream keeps no position: every pass is given its epoch and start position, and whoever hands
out its batches (`ShardLoader`) keeps track of where it stands. Each DataLoader worker reads its
blocks of the rank's positions (epoch_plan.py) and returns each block as one stacked tensor, since
one shared-memory transfer per sample costs about a millisecond. A bad sample's position gets a
repeat of the same worker's last good sample (samples.py), so that the counts stay equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .epoch_plan import SamplePlan, rank_share, resampled_plan, samples_per_rank, uniform_plan, worker_positions
from .index import ShardIndex, adopt_verified, verified_fingerprints, verify_shard
from .samples import (
    OPEN_SHARDS,
    BadSampleError,
    BadSampleLog,
    BadSamplePolicy,
    RawSample,
    SampleReader,
    fill_bad_samples,
)

ImageTransform = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")


class SampleChunk(NamedTuple):
    """Transformed samples of consecutive reads of one worker, stacked for one cheap transfer."""

    positions: list[int]
    images: torch.Tensor  # n x C x H x W
    labels: list[int]


class WorkerReport(NamedTuple):
    """A worker's last record of a pass: its skipped samples by reason."""

    skipped: dict[str, int]


def env_rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size as given, else from RANK / WORLD_SIZE (set by torchrun and Ray), else 0 / 1."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


def worker_slot() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def groups(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while group := list(islice(iterator, size)):
        yield group


class ShardStream:
    """One rank's stream of samples from a shard set: a uniform epoch (every sample once across the
    ranks), or a resampled one of `epoch_length` samples per rank. Read it through `ShardLoader`.
    """

    open_shards = OPEN_SHARDS

    def __init__(
        self,
        index: ShardIndex,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        transform: ImageTransform | None = None,
        resampled: bool = False,
        epoch_length: int | None = None,
        on_bad_sample: BadSamplePolicy = "raise",
        verify_checksums: bool = True,
    ) -> None:
        self.rank, self.world_size = env_rank_and_world(rank, world_size)
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
        if resampled and (epoch_length is None or epoch_length < 1):
            raise ValueError("resampled=True needs epoch_length >= 1 (samples per rank and epoch)")
        if index.total_samples < self.world_size:
            raise ValueError(f"{index.total_samples} samples cannot be split over {self.world_size} ranks")
        self.index, self.seed, self.transform = index, seed, transform
        self.resampled, self.epoch_length = resampled, epoch_length
        self.on_bad_sample, self.verify_checksums = on_bad_sample, verify_checksums

    # -- the epoch's shape
    @property
    def samples_per_epoch(self) -> int:
        """What this rank yields per epoch: the same on every rank."""
        if self.resampled:
            return self.epoch_length
        return samples_per_rank(self.index.total_samples, self.world_size)

    @property
    def padding_per_epoch(self) -> int:
        """Re-read samples in this rank's uniform epoch (0 or 1; W·S − N over all ranks)."""
        if self.resampled:
            return 0
        return self.samples_per_epoch - rank_share(self.index.total_samples, self.world_size, self.rank)

    def training_batches(self, batch_size: int) -> int:
        """Full batches per epoch when training. A uniform epoch takes the global batches whose
        W·batch_size positions are all real samples, N // (W·batch_size): padding is never trained on,
        and W' ranks with W·batch_size / W' each take as many steps (an elastic resize keeps the count)."""
        if self.resampled:
            return self.samples_per_epoch // batch_size
        return self.index.total_samples // (self.world_size * batch_size)

    def plan(self, epoch: int) -> SamplePlan:
        if self.resampled:
            return resampled_plan(self.index, self.seed, epoch, self.rank, self.epoch_length)
        return uniform_plan(self.index, self.seed, epoch, self.rank, self.world_size)

    # -- passes
    def epoch_pass(self, epoch: int, start: int, end: int, chunk_size: int) -> EpochPass:
        """The pass over positions [start, end) of `epoch`, read in chunks of `chunk_size` samples.

        Its shards are verified here, once in the calling process, so that loader workers need not:
        the verified files travel with the stream to them (see __getstate__).
        """
        if self.verify_checksums:
            for shard in np.unique(self.plan(epoch).shards[start:end]):
                verify_shard(self.index.shard_path(int(shard)), self.index.shards[int(shard)].sha256)
        return EpochPass(self, epoch, start, end, chunk_size)

    def read(self, epoch: int, start: int, end: int, chunk_size: int) -> Iterator[SampleChunk | WorkerReport]:
        """This process's share of the pass over positions [start, end) of `epoch`: its chunks, then its report."""
        worker, num_workers = worker_slot()
        plan = self.plan(epoch)
        positions = worker_positions(start, end, worker, num_workers, chunk_size)
        log = BadSampleLog(self.on_bad_sample)
        share = f"epoch {epoch}, rank {self.rank}, loader worker {worker}"
        samples = fill_bad_samples(self._read(plan, positions, log), share)
        for chunk in groups(samples, chunk_size):
            yield self._transformed(chunk)
        yield WorkerReport(dict(log.counts))

    def _read(
        self, plan: SamplePlan, positions: Iterable[int], log: BadSampleLog
    ) -> Iterator[tuple[int, RawSample | None]]:
        reader = SampleReader(self.index, self.verify_checksums, self.open_shards)
        try:
            for position in positions:
                try:
                    sample = reader.read(int(plan.shards[position]), int(plan.members[position]))
                except BadSampleError as error:
                    log.record(error)
                    sample = None
                yield position, sample
        finally:
            reader.close()

    def _transformed(self, chunk: list[tuple[int, RawSample]]) -> SampleChunk:
        images = [sample.image if self.transform is None else self.transform(sample.image) for _, sample in chunk]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different shapes {sorted(shapes)} cannot be batched: give the stream a transform "
                "that outputs one size (e.g. augment='imagenet')"
            )
        return SampleChunk([position for position, _ in chunk], torch.stack(images), [s.label for _, s in chunk])

    # Loader workers started by spawn or forkserver get the stream pickled: hand them this process's
    # verified shard files, so that each worker does not hash every shard again.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_verified_by_parent": verified_fingerprints()}

    def __setstate__(self, state: dict) -> None:
        adopt_verified(state.pop("_verified_by_parent"))
        self.__dict__.update(state)


@dataclass(frozen=True)
class EpochPass(IterableDataset):
    """One pass of a stream, fixed when it is made; every DataLoader worker iterates its own share."""

    stream: ShardStream
    epoch: int
    start: int
    end: int
    chunk_size: int

    def __iter__(self) -> Iterator[SampleChunk | WorkerReport]:
        return self.stream.read(self.epoch, self.start, self.end, self.chunk_size)
