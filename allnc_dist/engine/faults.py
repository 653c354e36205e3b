"""Fault injection for the crash-safety and fault-tolerance tests: a test-only hook, set through the
ALLNC_FAULT environment variable of the training process (for Ray workers: the job's runtime_env
env_vars) and never through the run's config.

    ALLNC_FAULT="exit_at_step=6,rank=1"                     rank 1 exits at step 6 (a fresh run only)
    ALLNC_FAULT="crash_in_checkpoint_write_at_epoch=4"      killed half-way through epoch 4's checkpoint
    ALLNC_FAULT="hold_after_step=11,hold_below_workers=2"  a run on fewer than 2 workers waits after step 11
                                                            until it is stopped (an elastic test's window for
                                                            the group to grow back)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields

FAULT_ENV = "ALLNC_FAULT"
# Exit status of a process that `exit_at_step` ends.
INJECTED_FAULT_EXIT = 86
# Ray's controller collects reported checkpoints when it polls the workers (every 2 s): a checkpoint
# reported just before a crash may otherwise not count yet.
FAULT_GRACE_S = 5.0


@dataclass(frozen=True)
class FaultPlan:
    exit_at_step: int | None = None
    rank: int = 0
    crash_in_checkpoint_write_at_epoch: int | None = None
    hold_after_step: int | None = None
    hold_below_workers: int = 0

    @classmethod
    def parse(cls, text: str | None) -> FaultPlan:
        if not text:
            return cls()
        names = {f.name for f in fields(cls)}
        values = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            if key.strip() not in names or not value.strip().isdigit():
                raise ValueError(f"{FAULT_ENV}={text!r}: expected comma-separated {sorted(names)} = integer")
            values[key.strip()] = int(value)
        return cls(**values)

    @classmethod
    def from_env(cls) -> FaultPlan:
        return cls.parse(os.environ.get(FAULT_ENV))

    def after_step(self, step: int, rank: int, world_size: int, resumed: bool) -> None:
        if self.hold_after_step is not None and step >= self.hold_after_step and world_size < self.hold_below_workers:
            while True:  # until Ray Train stops this worker group
                time.sleep(1.0)
        self.exit_if_due(step, rank, resumed)

    def exit_if_due(self, step: int, rank: int, resumed: bool) -> None:
        if self.exit_at_step == step and self.rank == rank and not resumed:
            time.sleep(FAULT_GRACE_S)
            print(f"fault injection: rank {rank} exits at step {step}", flush=True)
            os._exit(INJECTED_FAULT_EXIT)

    def crashes_checkpoint_write(self, epoch: int) -> bool:
        return self.crash_in_checkpoint_write_at_epoch == epoch
