"""Checkpoints: one format for both runtimes, written crash-safe, and the schedule of when to write.

The format is one file, `checkpoint.pt`: the whole model, the optimiser in torch's own layout (full
tensors, indexed by parameter order), the schedule, the class-mean trackers, the readers' place and
the loop's counters. The local runtime keeps it in the run directory; the Ray runtime reports a
folder holding it to Ray Train. Either runtime resumes from the other's.

Writing goes to a temporary file, flushed to disk, then renamed into place: a rename within one
folder is atomic, so a crash at any moment leaves either the previous checkpoint or the new one,
never a torn file. Loading uses weights_only=True: a checkpoint holds tensors and plain values only,
and never runs code.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import torch

from ..config import TrainConfig
from ..durable_files import atomic_output

CHECKPOINT_FILE = "checkpoint.pt"
OUTPUTS_FOLDER = "outputs"  # in a Ray run's checkpoints: the run folder as it stood (all its outputs at the end)
FORMAT_VERSION = 2  # 1: the engines' former formats (a DeepSpeed folder under Ray), not readable here


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


def load_checkpoint(path: str | Path) -> dict:
    """The state in `path`, a checkpoint file or a folder holding one (a Ray Train checkpoint), on the CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is a checkpoint in another format ({state.get('format', 1)}, expected "
                         f"{FORMAT_VERSION}): resume it with the allnc_dist version that wrote it")
    return state


class CheckpointSchedule:
    """When a run checkpoints: every `checkpoint_every` epochs and after the last, and every
    `checkpoint_every_steps` steps inside an epoch."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.every_epochs, self.every_steps, self.epochs = cfg.checkpoint_every, cfg.checkpoint_every_steps, cfg.epochs
        self.steps_per_epoch = steps_per_epoch

    def due_after_step(self, step: int) -> bool:
        """Inside an epoch only: the epoch's end has its own rule."""
        return bool(self.every_steps) and step % self.every_steps == 0 and step % self.steps_per_epoch != 0

    def due_after_epoch(self, epoch: int) -> bool:
        return epoch % self.every_epochs == 0 or epoch == self.epochs
