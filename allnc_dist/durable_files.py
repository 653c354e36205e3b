"""Files that are written whole or not at all, and content checksums.

A rename within one folder is atomic, so writing to a temporary file, flushing it to disk and then
renaming it into place leaves either the old file or the complete new one after a crash at any
moment. Checkpoints, shards and shard indexes are all written this way.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

HASH_CHUNK_BYTES = 1 << 20


def temporary_path(path: Path) -> Path:
    """Where `path` is written before its rename: a hidden sibling named after the writing process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A file that becomes `path` complete (fsynced, renamed) or not at all."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with temporary.open("wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
