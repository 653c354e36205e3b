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

from ..durable_files import atomic_output


def save_checkpoint(state: dict, path: str | Path, crash_half_way: bool = False) -> None:
    """Atomically write `state` to `path`. `crash_half_way` is fault injection for tests: the process
    is killed after half of the bytes reached the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    with atomic_output(path) as file:
        if crash_half_way:
            file.write(payload[: len(payload) // 2])
            file.flush()
            os.fsync(file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        file.write(payload)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
