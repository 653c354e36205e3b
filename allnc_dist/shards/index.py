"""A shard set's index.json (docs/shards.md): loading, validation, and per-shard checksum checks.

`load_index` turns index.json into a `ShardIndex` whose member tables are numpy arrays, so that a
reader can plan an epoch, or pick samples by class, without opening any shard. Every inconsistency
the index can show on its own (counts, labels, offsets, names) is an `IndexFormatError` naming the
file and the field. `verify_shard` checks a shard file against its recorded sha256, once per process
for each (path, size, mtime).
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from ..durable_files import file_sha256

INDEX_FILE = "index.json"
INDEX_FORMAT = "allnc-shards"
IMAGE_EXTENSIONS = ("png", "jpg")

# A shard file as it was when verified: (absolute path, size, mtime in ns). A rewritten file gets a
# new mtime, so it is checked again.
Fingerprint = tuple[str, int, int]
_verified: set[Fingerprint] = set()


class IndexFormatError(ValueError):
    """index.json is missing, unreadable or inconsistent; the message names the file and the field."""


# Builds the error for one inconsistency, prefixed with the index file's path.
Fail = Callable[[str], IndexFormatError]


class CorruptShardError(RuntimeError):
    """A shard file whose bytes do not match the sha256 recorded in index.json."""


class Member(NamedTuple):
    """One sample of a shard, as index.json lists it."""

    key: str
    label: int
    offset: int  # byte offset of the image member's data in the tar
    size: int  # the image member's data size in bytes
    ext: str


@dataclass
class ShardInfo:
    """One shard's index entry, its member table held column by column in numpy arrays (compact, and
    shared copy-on-write with forked loader workers, unlike lists of Python objects)."""

    name: str
    sha256: str
    keys: np.ndarray  # str, one per member, in tar order
    labels: np.ndarray  # int64
    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    ext_codes: np.ndarray  # uint8, positions in IMAGE_EXTENSIONS

    @property
    def samples(self) -> int:
        return len(self.keys)

    @property
    def members(self) -> list[Member]:
        """All members in tar order (built on each call: use `member(i)` for single ones)."""
        return [self.member(position) for position in range(self.samples)]

    def member(self, position: int) -> Member:
        """The `position`-th member in tar order."""
        return Member(
            str(self.keys[position]),
            int(self.labels[position]),
            int(self.offsets[position]),
            int(self.sizes[position]),
            IMAGE_EXTENSIONS[self.ext_codes[position]],
        )


@dataclass
class ShardIndex:
    """A validated shard set: where it lives, its shards and its classes."""

    root: Path
    shards: list[ShardInfo]
    class_counts: list[int]
    class_names: list[str]
    image_shape: tuple[int, int, int] | None
    shard_sizes: np.ndarray = field(init=False)  # samples per shard, int64

    def __post_init__(self) -> None:
        self.shard_sizes = np.array([shard.samples for shard in self.shards], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def total_samples(self) -> int:
        return int(self.shard_sizes.sum())

    def shard_path(self, shard: int) -> Path:
        return self.root / self.shards[shard].name


# -------------------------------------------------------------------------------------------- load
def load_index(split_dir: str | Path) -> ShardIndex:
    """Read and validate `<split_dir>/index.json` (a path to the file itself also works)."""
    path = Path(split_dir)
    if path.is_dir():
        path = path / INDEX_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: no index.json (is this a shard set written by `allnc shards`?)") from None
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{path}: cannot read index.json: {err}") from None
    return _parse_index(raw, path)


def _parse_index(raw: Any, path: Path) -> ShardIndex:
    def fail(message: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: {message}")

    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
        raise fail(f"'format' must be {INDEX_FORMAT!r}")
    class_counts = _int_list(raw.get("class_counts"), "class_counts", fail)
    class_names = raw.get("class_names")
    num_classes = raw.get("num_classes")
    if not isinstance(class_names, list) or num_classes != len(class_counts) or len(class_names) != num_classes:
        raise fail(
            f"num_classes ({num_classes}), class_counts ({len(class_counts)} entries) and class_names "
            "must agree"
        )
    if not isinstance(raw.get("shards"), list) or not raw["shards"]:
        raise fail("'shards' must be a non-empty list")
    shards = [_parse_shard(entry, i, num_classes, fail) for i, entry in enumerate(raw["shards"])]
    index = ShardIndex(
        root=path.parent,
        shards=shards,
        class_counts=class_counts,
        class_names=[str(name) for name in class_names],
        image_shape=_image_shape(raw.get("image_shape"), fail),
    )
    _check_totals(index, raw.get("total_samples"), fail)
    return index


def _int_list(value: Any, name: str, fail: Fail) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise fail(f"'{name}' must be a list of non-negative integers")
    return value


def _image_shape(value: Any, fail: Fail) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
        raise fail(f"'image_shape' must be [C, H, W] or null, got {value!r}")
    return tuple(value)


def _parse_shard(entry: Any, position: int, num_classes: int, fail: Fail) -> ShardInfo:
    where = f"shards[{position}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} must be an object")
    name, sha256, members = entry.get("name"), entry.get("sha256"), entry.get("members")
    # A name is a file in the split folder: never a path that could point elsewhere.
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise fail(f"{where}.name must be a plain file name, got {name!r}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise fail(f"{where} ({name}): 'sha256' must be a hex digest")
    if not isinstance(members, list) or entry.get("samples") != len(members):
        raise fail(f"{where} ({name}): 'samples' must equal the number of 'members'")
    for member in members:
        _check_member(member, num_classes, lambda m: fail(f"{where} ({name}): member {member!r}: {m}"))
    keys, labels, offsets, sizes, exts = zip(*members) if members else ([], [], [], [], [])
    return ShardInfo(
        name=name,
        sha256=sha256.lower(),
        keys=np.array(keys, dtype=str),
        labels=np.array(labels, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        sizes=np.array(sizes, dtype=np.int64),
        ext_codes=np.array([IMAGE_EXTENSIONS.index(ext) for ext in exts], dtype=np.uint8),
    )


def _check_member(member: Any, num_classes: int, fail: Fail) -> None:
    if not isinstance(member, list) or len(member) != 5:
        raise fail("must be [key, label, offset, size, ext]")
    key, label, offset, size, ext = member
    if not isinstance(key, str) or not key or "." in key:
        raise fail("the key must be a non-empty string without dots")
    if not isinstance(label, int) or not 0 <= label < num_classes:
        raise fail(f"the label must be an integer in [0, {num_classes})")
    # Member data always starts right after a 512-byte header, on a block boundary.
    if not isinstance(offset, int) or offset < tarfile.BLOCKSIZE or offset % tarfile.BLOCKSIZE:
        raise fail("the offset must be a positive multiple of 512")
    if not isinstance(size, int) or size < 0:
        raise fail("the size must be a non-negative integer")
    if ext not in IMAGE_EXTENSIONS:
        raise fail(f"the extension must be one of {IMAGE_EXTENSIONS}")


def _check_totals(index: ShardIndex, total_samples: Any, fail: Fail) -> None:
    if total_samples != index.total_samples:
        raise fail(f"total_samples is {total_samples}, but the shards hold {index.total_samples} samples")
    tallied = np.bincount(np.concatenate([s.labels for s in index.shards]), minlength=index.num_classes)
    if tallied.tolist() != index.class_counts:
        raise fail(f"class_counts {index.class_counts} do not match the members' labels {tallied.tolist()}")
    keys = np.concatenate([shard.keys for shard in index.shards])
    if len(np.unique(keys)) != len(keys):
        raise fail("a key appears more than once")


# ------------------------------------------------------------------------------------------ verify
def shard_fingerprint(path: str | Path) -> Fingerprint:
    stat = os.stat(path)
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def verify_shard(path: str | Path, sha256: str) -> None:
    """Refuse a shard whose bytes do not hash to `sha256` (CorruptShardError).

    The result is cached for the process, keyed by (path, size, mtime), so that each shard is hashed
    once per process unless its file changes.
    """
    fingerprint = shard_fingerprint(path)
    if fingerprint in _verified:
        return
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise CorruptShardError(f"checksum mismatch: {path} has sha256 {actual}, index.json says {sha256}")
    _verified.add(fingerprint)


def verify_across_ranks(indexes: Iterable[ShardIndex], rank: int, world_size: int,
                        gather_objects: Callable[[Any], list]) -> None:
    """Hash every shard of `indexes` once across the ranks, not once on every rank: rank r hashes every
    W-th shard, and `gather_objects` (an all-gather) shares what each verified. A rank adopts another's
    verification only for a file of the same path, size and modification time, the same file on
    shared storage; a node's own copy of a set is hashed there when it is read. A bad shard fails every
    rank with the error that found it (no rank waits in the gather for one that gave up)."""
    shards = [(index.shard_path(i), shard.sha256) for index in indexes for i, shard in enumerate(index.shards)]
    error = None
    try:
        for path, sha256 in shards[rank::world_size]:
            verify_shard(path, sha256)
    except (CorruptShardError, OSError) as err:
        error = err
    outcomes = gather_objects((verified_fingerprints(), error))
    for _, found in outcomes:
        if found is not None:
            raise found
    for fingerprints, _ in outcomes:
        adopt_verified(fingerprints)


def verified_fingerprints() -> frozenset[Fingerprint]:
    """The shard files this process has verified (to hand on to loader worker processes)."""
    return frozenset(_verified)


def adopt_verified(fingerprints: Iterable[Fingerprint]) -> None:
    """Trust verifications done by a parent process; a file changed since then no longer matches."""
    _verified.update(fingerprints)
