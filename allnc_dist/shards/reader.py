"""The streaming reader of a shard set (docs/shards.md), used by the local engine and every
distributed worker.

**Plan, then read.** Each epoch is planned before anything is read. A `SamplePlan` lists, for one
rank, which (shard, member) each position of its epoch reads. A sample is read by one seek + read at
the offsets index.json records, which also lets a plan start anywhere inside a shard.

**Uniform epochs.** The shard order is a permutation drawn from (seed, epoch), the same on every
rank, and each shard's members are permuted from (seed, epoch, shard). Concatenated, they form the
epoch's global sequence of all N samples. Rank r reads positions r, r + W, r + 2W, ... of it, so the
ranks' shares differ in length by at most one, and all ranks move through the shards together. Each
sample is read exactly once per epoch, across all ranks and loader workers. The stride also makes
the ranks' i-th batches of size B together the i-th batch of size W·B of a single rank: W workers
with batch B train on exactly the batches of one worker with batch W·B.

**Equal counts.** Every rank yields exactly S = ceil(N / W) samples per epoch. A rank whose share is
one short re-reads its own first sample as padding, so an epoch holds W·S − N ≤ W − 1 padding
samples in all (`padding_per_epoch` is this rank's share). `ShardLoader` drops the last partial
batch, so every rank hands out exactly S // batch_size batches.

**Resampled epochs.** Shards are drawn with replacement (weighted by their sample counts) from
(seed, epoch, rank), and each rank reads exactly `epoch_length` samples.

**Loader workers.** A rank's positions are dealt to its DataLoader workers in blocks of one batch
(`ShardLoader` sets `chunk_size` to its batch size). A worker returns each block as one stacked
tensor, since one shared-memory transfer per sample costs about a millisecond, and the main process
hands a block that arrives whole and in order straight on as a batch, without copying it. Anything
else (blocks that bad samples broke up) is put back in position order sample by sample. The order,
and with it every batch, therefore depends on (seed, epoch, rank) only: not on timing, nor on the
number of workers.

**Resume.** `state_dict()` holds the epoch and the samples the loader has handed out in it.
`load_state_dict()` makes the next pass start at that position. Skipping is free: the plan says
where every position is.

**Bad input.** A truncated or corrupt member, an undecodable image, a missing or non-integer `.cls`,
or a label outside [0, K) raises `BadSampleError`, naming the shard file and the key. With
on_bad_sample="skip", the sample is logged and counted by reason (`skipped`, per pass). Its position
gets a repeat of the same worker's last good sample instead, so the counts stay equal. A shard
whose bytes do not match its checksum is always refused (`CorruptShardError`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import tarfile
from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Literal, NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms.functional import pil_to_tensor

from .index import Member, ShardIndex, adopt_verified, verified_fingerprints, verify_shard

logger = logging.getLogger(__name__)

BadSamplePolicy = Literal["raise", "skip"]
ImageTransform = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]  # images N x C x H x W, labels N (long)
T = TypeVar("T")

BLOCK = tarfile.BLOCKSIZE
# Samples per worker-to-main-process transfer (one stacked tensor each) unless a loader sets its batch size.
CHUNK_SIZE = 32
# A uniform pass moves through its shards in order: the current shard and the next are enough.
OPEN_SHARDS = 2
LABEL_TEXT = re.compile(rb"[0-9]+")


class RandomStream(IntEnum):
    """Independent random streams derived from the seed, one per purpose."""

    SHARD_ORDER = 0
    MEMBER_ORDER = 1
    RESAMPLED = 2
    REBALANCED = 3


def seeded_rng(stream: RandomStream, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(stream), *key])


# -------------------------------------------------------------------------------------- bad input
class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the shard file and the key.

    The message is the only constructor argument needed (DataLoader re-raises a worker's exception
    by calling its type with the formatted traceback).
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


def bad_sample(path: Path, key: str, reason: str, detail: str) -> BadSampleError:
    return BadSampleError(f"bad sample in shard {path}, key {key}: {detail} [{reason}]", reason)


class BadSampleLog:
    """What a reader does with a bad sample: raise it, or log it and count it by reason."""

    def __init__(self, on_bad_sample: BadSamplePolicy) -> None:
        self.skip = on_bad_sample == "skip"
        self.counts: Counter[str] = Counter()

    def record(self, error: BadSampleError) -> None:
        if not self.skip:
            raise error
        self.counts[error.reason] += 1
        logger.warning("skipped %s", error)


# ---------------------------------------------------------------------------------------- reading
class RawSample(NamedTuple):
    """A decoded, validated sample before the transform: uint8 C x H x W."""

    key: str
    label: int
    image: torch.Tensor


def padded_size(size: int) -> int:
    """Bytes a tar member's data occupies: whole 512-byte blocks."""
    return -(-size // BLOCK) * BLOCK


class MemberHeader(NamedTuple):
    name: str
    size: int


def parse_header(block: bytes) -> MemberHeader | None:
    """The name and size in a ustar header block, or None where there is none (end of archive, a
    bad checksum, garbage). Only the fields shards use are read: 4x faster than tarfile's parser."""
    if len(block) < BLOCK or block[257:262] != b"ustar":
        return None
    try:
        size = int(block[124:136].strip(b"\0 ") or b"0", 8)
        checksum = int(block[148:156].strip(b"\0 "), 8)
    except ValueError:
        return None
    # The checksum sums the header's bytes with its own 8-byte field counted as spaces.
    if checksum != sum(block[:148]) + 8 * ord(" ") + sum(block[156:BLOCK]):
        return None
    return MemberHeader(block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"), size)


def image_mode(image_shape: tuple[int, int, int] | None) -> str:
    """PIL mode to decode into: 1 channel is L, 3 channels (or mixed file sources) RGB."""
    channels = 3 if image_shape is None else image_shape[0]
    if channels not in (1, 3):
        raise ValueError(f"shards hold 1- or 3-channel images, index.json says image_shape {image_shape}")
    return "L" if channels == 1 else "RGB"


def decode_image(data: bytes, mode: str) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return pil_to_tensor(image if image.mode == mode else image.convert(mode))


def parse_label(after_image: bytes, path: Path, key: str) -> int:
    """The label of the `<key>.cls` member that starts `after_image` (bytes after the image data)."""
    if len(after_image) < BLOCK:
        raise bad_sample(path, key, "truncated", "the file ends before the label member")
    header = parse_header(after_image[:BLOCK])
    if header is None or header.name != f"{key}.cls":
        raise bad_sample(path, key, "missing_label", f"no {key}.cls member follows the image")
    if header.size > BLOCK:
        raise bad_sample(path, key, "bad_label", f"the label member holds {header.size} bytes")
    text = after_image[BLOCK : BLOCK + header.size]
    if len(text) < header.size:
        raise bad_sample(path, key, "truncated", "the file ends inside the label member")
    if not LABEL_TEXT.fullmatch(text):
        raise bad_sample(path, key, "bad_label", f"the label {text!r} is not a decimal integer")
    return int(text)


class ShardFiles:
    """The shard files one process reads: verified on first open, at most `capacity` kept open."""

    def __init__(self, index: ShardIndex, verify: bool, capacity: int) -> None:
        self.index, self.verify, self.capacity = index, verify, capacity
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()

    def get(self, shard: int) -> BinaryIO:
        file = self._open.pop(shard, None)
        if file is None:
            path = self.index.shard_path(shard)
            if self.verify:
                verify_shard(path, self.index.shards[shard].sha256)
            file = path.open("rb")
            if len(self._open) >= self.capacity:
                self._open.popitem(last=False)[1].close()
        self._open[shard] = file  # most recently used last
        return file

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


class SampleReader:
    """Reads single samples by their index.json offsets and checks everything it reads."""

    def __init__(self, index: ShardIndex, verify: bool, open_shards: int) -> None:
        self.index = index
        self.files = ShardFiles(index, verify, open_shards)
        self.mode = image_mode(index.image_shape)

    def read(self, shard: int, position: int) -> RawSample:
        """Member `position` (tar order) of `shard`; BadSampleError if anything about it is wrong."""
        path, member = self.index.shard_path(shard), self.index.shards[shard].member(position)
        file = self.files.get(shard)
        # One read covers the image's header and data and the label member after it.
        file.seek(member.offset - BLOCK)
        span = file.read(BLOCK + padded_size(member.size) + 2 * BLOCK)
        data = span[BLOCK : BLOCK + member.size]
        if len(data) < member.size:
            raise bad_sample(path, member.key, "truncated", "the image data runs past the end of the file")
        self.check_image_header(span[:BLOCK], path, member)
        label = parse_label(span[BLOCK + padded_size(member.size) :], path, member.key)
        return RawSample(member.key, self.checked_label(label, path, member), self.decoded(data, path, member))

    def check_image_header(self, block: bytes, path: Path, member: Member) -> None:
        header = parse_header(block)
        name = f"{member.key}.{member.ext}"
        if header is None or header.name != name or header.size != member.size:
            raise bad_sample(
                path, member.key, "corrupt_member",
                f"no tar header of {name} ({member.size} bytes) at byte {member.offset - BLOCK}",
            )

    def checked_label(self, label: int, path: Path, member: Member) -> int:
        if label >= self.index.num_classes:
            raise bad_sample(
                path, member.key, "label_out_of_range", f"label {label} >= num_classes {self.index.num_classes}"
            )
        if label != member.label:
            raise bad_sample(path, member.key, "label_mismatch", f"label {label}, index.json says {member.label}")
        return label

    def decoded(self, data: bytes, path: Path, member: Member) -> torch.Tensor:
        try:
            image = decode_image(data, self.mode)
        except Exception as err:  # PIL reports undecodable bytes through many exception types
            raise bad_sample(path, member.key, "undecodable", f"cannot decode the {member.ext} image: {err}") from err
        shape = self.index.image_shape
        if shape is not None and tuple(image.shape) != shape:
            raise bad_sample(path, member.key, "wrong_shape", f"image of shape {tuple(image.shape)}, not {shape}")
        return image

    def close(self) -> None:
        self.files.close()


def fill_bad_samples(
    samples: Iterable[tuple[int, RawSample | None]], share: str
) -> Iterator[tuple[int, RawSample]]:
    """Give each bad (None) position a repeat of the last good sample, so that no position is lost.

    Positions that come before any good sample wait for the first one. A share with no good sample
    at all cannot keep the counts equal: that is an error, never an endless search.
    """
    last_good: RawSample | None = None
    waiting: list[int] = []
    for position, sample in samples:
        if sample is None:
            if last_good is None:
                waiting.append(position)
            else:
                yield position, last_good
            continue
        last_good = sample
        yield position, sample
        for earlier in waiting:
            yield earlier, sample
        waiting.clear()
    if waiting:
        raise BadSampleError(f"{share}: every sample is bad; nothing can stand in for them", "no_good_sample")


# ------------------------------------------------------------------------------------------ plans
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


def groups(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while group := list(islice(iterator, size)):
        yield group


# ----------------------------------------------------------------------------------------- stream
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


class ShardStream(IterableDataset):
    """One rank's stream of samples from a shard set; see the module docstring.

    Iterate it through `ShardLoader`: the stream yields `SampleChunk`s and `WorkerReport`s, which
    the loader turns into ordered batches while keeping the epoch's state (`position`, `skipped`).
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
        super().__init__()
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
        self.chunk_size = CHUNK_SIZE
        self.epoch = 0
        self.position = 0  # samples handed out in the current pass
        self.pass_start = 0  # where the current pass started (a resumed one inside the epoch)
        self._resume_at = 0  # where the next pass starts
        self.skipped: Counter[str] = Counter()  # bad samples of the current pass, by reason

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

    def plan(self, epoch: int) -> SamplePlan:
        if self.resampled:
            return resampled_plan(self.index, self.seed, epoch, self.rank, self.epoch_length)
        return uniform_plan(self.index, self.seed, epoch, self.rank, self.world_size)

    # -- epochs and state
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

    def start_pass(self) -> None:
        """Begin a pass in the main process: fix its start, reset its counts, verify its shards.

        Verifying here, once per process, lets loader workers skip it: the verified files travel
        with the stream to them (see __getstate__).
        """
        self.pass_start, self._resume_at = self._resume_at, 0
        self.position = self.pass_start
        self.skipped = Counter()
        if self.verify_checksums:
            for shard in np.unique(self.plan(self.epoch).shards[self.pass_start :]):
                verify_shard(self.index.shard_path(int(shard)), self.index.shards[int(shard)].sha256)

    def finish_pass(self) -> None:
        if self.skipped:
            logger.warning(
                "epoch %d, rank %d: skipped %d bad samples %s; each was replaced by a repeat of a good one",
                self.epoch, self.rank, sum(self.skipped.values()), dict(self.skipped),
            )

    # -- reading, in a loader worker or in the main process
    def __iter__(self) -> Iterator[SampleChunk | WorkerReport]:
        worker, num_workers = worker_slot()
        plan = self.plan(self.epoch)
        positions = worker_positions(self.pass_start, len(plan), worker, num_workers, self.chunk_size)
        log = BadSampleLog(self.on_bad_sample)
        share = f"epoch {self.epoch}, rank {self.rank}, loader worker {worker}"
        samples = fill_bad_samples(self._read(plan, positions, log), share)
        for chunk in groups(samples, self.chunk_size):
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


# ----------------------------------------------------------------------------------------- loader
def shut_down_workers(records: Iterator) -> None:
    """Stop a DataLoader iterator's worker processes now.

    An error raised through the iterator leaves it in a reference cycle (its traceback holds the
    iterator's frames); the garbage collector then takes 5 s per worker to stop them.
    """
    shut_down = getattr(records, "_shutdown_workers", None)  # absent without workers
    if shut_down is not None:
        shut_down()


class ShardLoader:
    """Batches (images, labels) of a `ShardStream`, in the stream's position order.

    With drop_last (the default, for training), every pass of a full epoch hands out exactly
    S // batch_size batches on every rank, and the last S mod batch_size samples are dropped. With
    drop_last=False (for evaluation), the last partial batch is kept.
    """

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0, drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and stream.samples_per_epoch < batch_size:
            raise ValueError(
                f"each rank reads {stream.samples_per_epoch} samples per epoch, fewer than batch_size "
                f"{batch_size}: no full batch"
            )
        self.stream, self.batch_size, self.num_workers, self.drop_last = stream, batch_size, num_workers, drop_last
        stream.chunk_size = batch_size  # workers send whole batches

    def __len__(self) -> int:
        """Batches in a full epoch."""
        samples = self.stream.samples_per_epoch
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[Batch]:
        self.stream.start_pass()
        records = iter(DataLoader(self.stream, batch_size=None, num_workers=self.num_workers))
        try:
            yield from self._handed_out(self._batches(self._in_order(records)))
        finally:
            shut_down_workers(records)

    def _handed_out(self, batches: Iterable[Batch]) -> Iterator[Batch]:
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
        self.stream.finish_pass()
        if held is not None:
            yield self._hand_out(held)

    def _in_order(self, records: Iterable[SampleChunk | WorkerReport]) -> Iterator[Batch]:
        """Runs of consecutive samples (images, labels), in position order, from the workers' chunks;
        collects the workers' reports. A chunk that arrives whole and in order is one run."""
        expected, end = self.stream.pass_start, self.stream.samples_per_epoch
        waiting: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for record in records:
            if isinstance(record, WorkerReport):
                self.stream.skipped.update(record.skipped)
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
        self.stream.position += len(batch[1])
        return batch


def joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
