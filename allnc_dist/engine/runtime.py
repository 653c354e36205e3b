"""What the training loop needs from where it runs. A runtime owns device placement, the
collectives, the optimiser update and checkpoint I/O; the loop (engine/trainer.py) is the same on
every runtime. Two exist: `LocalRuntime` (one process, CPU or one GPU) and `RayDeepSpeedRuntime`
(one Ray Train worker with a DeepSpeed engine)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch

from ..config import RunConfig
from ..data import LongTailData
from ..method.objective import AllNCObjective
from .optimization import Optimization
from .streams import TrainingStreams


@dataclass
class Checkpoint:
    state: dict  # the format of engine/checkpoint.py, on the CPU
    where: str  # the file, folder or URI it came from, for the log
    own: bool = True  # this run's own checkpoint (False: train.resume_from names another run's)


class Runtime(Protocol):
    rank: int
    world_size: int
    device: torch.device
    accumulation: int  # batches per optimiser update
    restarts_in_place: bool  # a run directory that exists without a checkpoint is a restart, not a mistake

    def build_streams(self, cfg: RunConfig, data: LongTailData | None) -> TrainingStreams:
        """This rank's training batches and the evaluation loaders."""
        ...

    def optimization(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> Optimization: ...

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint this run continues from, if it has one."""
        ...

    def report(self, metrics: dict, checkpoint: dict | None = None) -> None:
        """Every rank, at the same steps: where the run stands, and the checkpoint state to keep."""
        ...

    def after_step(self, model: torch.nn.Module, objective: AllNCObjective, step: int) -> None: ...

    def global_epoch_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """An epoch's metrics over all ranks: loss parts averaged (the global batch's loss), images/s summed."""
        ...

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank: `tensor` summed over the ranks (evaluation adds up each rank's counts and sums)."""
        ...

    def describe(self) -> dict:
        """The runtime's entries in the run's report."""
        ...

    def finish(self) -> None:
        """Every rank, after rank 0 wrote the run's outputs."""
        ...
