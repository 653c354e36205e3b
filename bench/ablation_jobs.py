"""`jobs/ablation.py --local` as a subprocess: one job (a config, its variants, overrides and folder),
and a pool that runs several, two at a time by default, each with one torch thread.

Tracking is off for these runs (`tracking.enabled=false`): one SQLite store takes one writer. The
ablation job reuses finished runs, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A smoke run's recipe, on top of any config: one short epoch.
SMOKE_OVERRIDES = ("train.epochs=1", "train.eval_every=1", "train.checkpoint_every=1", "data.batch_size=64")


@dataclass(frozen=True)
class AblationJob:
    """One `jobs/ablation.py --local` process: a config, the variants, extra overrides, its folder."""
    config: str
    work: Path
    variants: str | None
    overrides: tuple[str, ...]

    def command(self, seeds: int) -> list[str]:
        command = [sys.executable, str(ROOT / "jobs" / "ablation.py"), "--local", "--config",
                   str(ROOT / "jobs" / "configs" / f"{self.config}.yaml"), "--seeds", str(seeds), "--out", str(self.work)]
        if self.variants:
            command += ["--variants", self.variants]
        return command + ["tracking.enabled=false", *self.overrides]


def run_job(job: AblationJob, seeds: int) -> str | None:
    """Runs one job to its end; returns what failed (with its log), or None."""
    job.work.mkdir(parents=True, exist_ok=True)
    with open(job.work / "ablation.log", "a") as log:
        code = subprocess.run(job.command(seeds), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    return None if code == 0 else f"{job.work} (log: {log.name})"


def run_ablations(jobs: list[AblationJob], seeds: int, parallel: int = 2) -> None:
    """Every job, `parallel` at a time: they share nothing but the CPUs."""
    with ThreadPoolExecutor(parallel) as pool:
        failed = [f for f in pool.map(lambda job: run_job(job, seeds), jobs) if f]
    if failed:
        raise SystemExit(f"ablation failed: {', '.join(failed)}")
