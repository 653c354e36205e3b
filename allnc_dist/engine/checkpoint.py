"""Crash-safe checkpoints: written to a temporary file, flushed to disk, then renamed into place.

A rename within one folder is atomic, so a crash at any moment leaves either the previous checkpoint
or the new one, never a torn file. Loading uses weights_only=True: a checkpoint holds tensors and
plain values only, and never runs code.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: str | Path, crash_half_way: bool = False) -> None:
    """Atomically write `state` to `path`. `crash_half_way` is fault injection for tests: the process
    is killed after half of the bytes reached the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        if crash_half_way:
            f.write(payload[: len(payload) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
