"""Run a function in W real processes joined by a gloo process group (rendezvous through a file, so
no port is opened)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, fn: Callable, world_size: int, store: str, args: tuple) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_workers(fn: Callable, world_size: int, tmp_path: Path, *args) -> None:
    """Call fn(rank, world_size, *args) in `world_size` processes; raises if any of them fails."""
    mp.spawn(_entry, args=(fn, world_size, str(tmp_path / "gloo-store"), args), nprocs=world_size, join=True)
