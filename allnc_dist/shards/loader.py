"""Batches of a `ShardStream` in its position order (`ShardLoader`), and where the loader stands in
its epoch: the loader, not the stream, keeps that position, and alone saves and restores it.

Workers send one batch per chunk. A chunk that arrives whole and in order goes straight on as a
batch, without a copy; anything else (chunks that bad samples broke up) is put back in position
order sample by sample. The order, and with it every batch, therefore depends on (seed, epoch, rank)
only: not on timing, nor on the number of workers.

**Resume.** `state_dict()` holds the epoch and the samples the loader has handed out in it.
`load_state_dict()` makes the next pass start at that position. Skipping is free: the plan says
where every position is.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from .samples import report_skipped
from .stream import SampleChunk, ShardStream, WorkerReport

Batch = tuple[torch.Tensor, torch.Tensor]  # images N x C x H x W, labels N (long)


def shut_down_workers(records: Iterator) -> None:
    """Stop a DataLoader iterator's worker processes now.

    An error raised through the iterator leaves it in a reference cycle (its traceback holds the
    iterator's frames); the garbage collector then takes 5 s per worker to stop them.
    """
    shut_down = getattr(records, "_shutdown_workers", None)  # absent without workers
    if shut_down is not None:
        shut_down()


def joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class ShardLoader:
    """Batches (images, labels) of a `ShardStream`, in the stream's position order.

    With drop_last (the default, for training), every pass of a full epoch hands out the same number
    of full batches on every rank: `batches_per_epoch` when given (a re-balanced loader matches its
    uniform one), else the stream's `training_batches`; the positions after them are not read. With
    drop_last=False (for evaluation), all S positions are read and the last partial batch is kept.
    `position` counts the samples handed out in `epoch`, `skipped` the bad samples of the current pass
    by reason.

    A torch.distributed.checkpoint Stateful by its methods, not by inheritance: that import costs ~0.7 s.
    """

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0, drop_last: bool = True,
                 batches_per_epoch: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.stream, self.batch_size, self.num_workers, self.drop_last = stream, batch_size, num_workers, drop_last
        self.batches_per_epoch = stream.training_batches(batch_size) if batches_per_epoch is None else batches_per_epoch
        if drop_last and not 0 < self.batches_per_epoch * batch_size <= stream.samples_per_epoch:
            raise ValueError(
                f"each of {stream.world_size} rank(s) reads {stream.samples_per_epoch} samples per epoch: no "
                f"{self.batches_per_epoch or 'full'} batch(es) of {batch_size} per rank"
            )
        self.epoch = 0
        self.position = 0
        self.skipped: Counter[str] = Counter()
        self._resume_at = 0  # where the next pass starts

    def __len__(self) -> int:
        """Batches in a full epoch."""
        return self.batches_per_epoch if self.drop_last else math.ceil(self.stream.samples_per_epoch / self.batch_size)

    @property
    def end(self) -> int:
        """Where a pass stops reading: after the last full batch, or at the epoch's end."""
        return self.batches_per_epoch * self.batch_size if self.drop_last else self.stream.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass. A resume point loaded for another epoch is dropped."""
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue an interrupted epoch: the next pass skips the `position` samples already handed out."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._resume_at = self.position

    def __iter__(self) -> Iterator[Batch]:
        start, self._resume_at = self._resume_at, 0
        self.position, self.skipped = start, Counter()
        # Chunks of one batch each: a worker's chunk can go out as a batch as it is.
        epoch_pass = self.stream.epoch_pass(self.epoch, start, self.end, self.batch_size)
        records = iter(DataLoader(epoch_pass, batch_size=None, num_workers=self.num_workers))
        try:
            yield from self._handed_out(self._batches(self._in_order(records, start)), epoch_pass.epoch)
        finally:
            shut_down_workers(records)

    def _handed_out(self, batches: Iterable[Batch], epoch: int) -> Iterator[Batch]:
        """The batches, each counted in `position` as it goes out.

        Each batch is held back until the next one is ready, so that the pass is finished (workers'
        reports in, counts checked) before the last batch goes out: a consumer that stops right after
        it, as zip() does, still gets complete counts.
        """
        held = None
        for batch in batches:
            if held is not None:
                yield self._hand_out(held)
            held = batch
        report_skipped(self.skipped, f"epoch {epoch}, rank {self.stream.rank}")
        if held is not None:
            yield self._hand_out(held)

    def _in_order(self, records: Iterable[SampleChunk | WorkerReport], start: int) -> Iterator[Batch]:
        """Runs of consecutive samples (images, labels), in position order, from the workers' chunks;
        collects the workers' reports. A chunk that arrives whole and in order is one run."""
        expected, end = start, self.end
        waiting: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for record in records:
            if isinstance(record, WorkerReport):
                self.skipped.update(record.skipped)
                continue
            labels = torch.tensor(record.labels, dtype=torch.long)
            if not waiting and record.positions == list(range(expected, expected + len(labels))):
                yield record.images, labels
                expected += len(labels)
                continue
            waiting.update(zip(record.positions, zip(record.images, labels)))
            while expected in waiting:
                image, label = waiting.pop(expected)
                yield image.unsqueeze(0), label.unsqueeze(0)
                expected += 1
        if waiting or expected != end:
            raise RuntimeError(f"the stream ended at position {expected} of {end} ({len(waiting)} out of order)")

    def _batches(self, runs: Iterable[Batch]) -> Iterator[Batch]:
        """Cut the runs into batches; a run that is exactly one batch goes out as it is, uncopied."""
        images: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        held, size = 0, self.batch_size
        for run_images, run_labels in runs:
            images.append(run_images)
            labels.append(run_labels)
            held += len(run_labels)
            while held >= size:
                all_images, all_labels = joined(images), joined(labels)
                yield all_images[:size], all_labels[:size]
                held -= size
                images, labels = ([all_images[size:]], [all_labels[size:]]) if held else ([], [])
        if held and not self.drop_last:
            yield joined(images), joined(labels)

    def _hand_out(self, batch: Batch) -> Batch:
        self.position += len(batch[1])
        return batch
