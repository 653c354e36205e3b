"""Reading one sample of a shard by the offsets index.json records, checking everything read, and
what to do with a sample that fails: raise `BadSampleError`, or log it, count it and stand in a
repeat of a good one (on_bad_sample="skip").

Bad input is a truncated or corrupt member, an undecodable image, a missing or non-integer `.cls`,
or a label outside [0, K) or unlike index.json's; the error names the shard file and the key. A
shard whose bytes do not match its checksum is always refused (`CorruptShardError`).
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, NamedTuple

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from .index import Member, ShardIndex, verify_shard

logger = logging.getLogger(__name__)

BadSamplePolicy = Literal["raise", "skip"]

BLOCK = tarfile.BLOCKSIZE
# Readers that move through the shards in order need only the current shard and the next open.
OPEN_SHARDS = 2
LABEL_TEXT = re.compile(rb"[0-9]+")


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
    """Reads single samples by their index.json offsets and checks everything it reads.

    webdataset (1.0) only streams a tar front to back; reading at recorded offsets needs this own parser.
    """

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


# --------------------------------------------------------------------------------------- skipping
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


def report_skipped(skipped: Counter[str], share: str) -> None:
    """One warning for a whole share's skipped samples, if any."""
    if skipped:
        logger.warning(
            "%s: skipped %d bad samples %s; each was replaced by a repeat of a good one",
            share, sum(skipped.values()), dict(skipped),
        )


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
