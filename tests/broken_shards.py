"""Copies of a real shard set (the digits_shards fixture), each broken in one way a run must refuse."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path


def first_train_shard(folder: Path) -> Path:
    return sorted((folder / "train").glob("train-*.tar"))[0]


def copy_shards(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def flip_a_byte(source: Path, folder: Path) -> Path:
    """The first train shard with one byte inverted: its sha256 no longer matches index.json."""
    shard = first_train_shard(copy_shards(source, folder))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return shard


def break_the_index(source: Path, folder: Path) -> Path:
    """train/index.json cut short: no longer JSON."""
    index = copy_shards(source, folder) / "train" / "index.json"
    index.write_text(index.read_text()[:100])
    return index


def break_a_label(source: Path, folder: Path) -> tuple[Path, str]:
    """The first sample's `.cls` member made non-numeric (run with data.verify_checksums=false, or the
    checksum refuses the shard first); returns the shard and the sample's key."""
    shard = first_train_shard(copy_shards(source, folder))
    with tarfile.open(shard) as tar:
        label = next(member for member in tar.getmembers() if member.name.endswith(".cls"))
    data = bytearray(shard.read_bytes())
    data[label.offset_data:label.offset_data + label.size] = b"x" * label.size
    shard.write_bytes(bytes(data))
    return shard, label.name.split(".")[0]
