"""The runtime of one process on the CPU or one GPU (the debug mode): a plain torch optimiser, and the
checkpoint as `checkpoint.pt` in the run directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import LongTailData, build_data
from ..method.objective import AllNCObjective
from ..tracking import RunDirectory
from .checkpoint import load_checkpoint, save_checkpoint
from .faults import FaultPlan
from .optimization import TorchOptimization
from .runtime import Checkpoint
from .streams import InMemoryStreams, ShardStreams, TrainingStreams


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is visible")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def autocast_for(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when train.bf16 asks for it; fp32 otherwise."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class LocalRuntime:
    rank, world_size, accumulation = 0, 1, 1
    restarts_in_place = False  # `allnc train` into a folder that holds a run needs --resume

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.resume = cfg, RunDirectory(run_dir), resume
        self.device = pick_device(cfg.train.device)
        self.faults = FaultPlan.from_env()

    def build_streams(self, cfg: RunConfig, data: LongTailData | None) -> TrainingStreams:
        """The streams data.source names; `data` overrides the in-memory dataset built from the config."""
        if cfg.data.source == "shards":
            return ShardStreams(cfg)
        return InMemoryStreams(cfg, data or build_data(cfg.data))

    def optimization(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> TorchOptimization:
        return TorchOptimization(model, optimizer, scheduler, self.cfg.optim.grad_clip)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.device, self.cfg.train.bf16)

    def latest_checkpoint(self) -> Checkpoint | None:
        if not self.resume:
            return None
        path = self.run_dir.checkpoint_path
        return Checkpoint(load_checkpoint(path), str(path))

    def report(self, metrics: dict, checkpoint: dict | None = None) -> None:
        if checkpoint is not None:
            crash = self.faults.crashes_checkpoint_write(checkpoint["epoch"])
            save_checkpoint(checkpoint, self.run_dir.checkpoint_path, crash_half_way=crash)

    def after_step(self, model: torch.nn.Module, objective: AllNCObjective, step: int) -> None:
        pass

    def global_epoch_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def describe(self) -> dict:
        return {"device": str(self.device)}

    def finish(self) -> None:
        pass
