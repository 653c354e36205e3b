"""1 -> 2 worker scaling of the distributed engine: steps/s and images/s of Ray Train CPU workers
(DeepSpeed ZeRO-1, gloo) training AllNC on digits-LT shards, with the same per-worker batch.

    python -m bench.worker_scaling [--epochs 6] [--out bench/results/worker_scaling.json]
    python -m bench.worker_scaling --smoke --out /tmp/scaling.json

The rates come from the runs' own per-epoch records (metrics.jsonl), with the first epoch left out
(it pays for start-up). On a 2-core machine, 2 workers share the cores with Ray itself, so the
speed-up is bounded well below 2. Peak memory per worker is each Ray Train worker process's peak
resident set (the kernel's high-water mark VmHWM, what getrusage's ru_maxrss reports from inside),
read from /proc by the driver while the run goes on (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
from pathlib import Path

import psutil
from tabulate import tabulate

from allnc_dist.config import DataConfig, load_config
from allnc_dist.engine.ray_driver import ensure_ray, fit_on_ray
from allnc_dist.shards import builtin_sources, write_shards
from allnc_dist.tracking import RunDirectory

HERE = Path(__file__).parent
CONFIG = HERE.parent / "jobs" / "configs" / "digits_lt.yaml"


class PeakMemory:
    """Peak RSS of every Ray Train worker process of this driver's Ray while it is entered.

    The high-water mark is the kernel's own, so polling only has to read it before the worker exits:
    it misses at most growth in a worker's last POLL_S seconds, and a worker lives on a little after
    its training loop while Ray shuts the group down."""

    TITLE = "ray::RayTrainWorker"  # Ray's process title for the Train worker actors
    POLL_S = 0.2

    def __init__(self, earlier_workers: set[int]) -> None:
        # Workers of an earlier run can linger while Ray winds that group down: not this run's.
        self.earlier_workers = earlier_workers
        self.peak_kib: dict[int, int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def poll(self) -> None:
        # Only this driver's private Ray (its raylet is our child, the workers its children): other
        # jobs on the machine may run Ray Train workers of their own.
        driver = psutil.Process()
        while not self.stopped.wait(self.POLL_S):
            for process in driver.children(recursive=True):
                try:
                    title = " ".join(process.cmdline())
                except psutil.Error:  # it exited meanwhile
                    continue
                if title.startswith(self.TITLE) and process.pid not in self.earlier_workers:
                    self.record(process.pid)

    def record(self, pid: int) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # it exited meanwhile
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), int(line.split()[1]))

    def per_worker_mib(self) -> list[float]:
        return [round(kib / 1024, 1) for _, kib in sorted(self.peak_kib.items())]


def measure(shards: Path, run_dir: Path, workers: int, epochs: int, earlier_workers: set[int],
            overrides: list[str]) -> dict:
    """One run's throughput and per-worker peak memory; adds its worker PIDs to `earlier_workers`."""
    cfg = load_config(CONFIG, ["data.source=shards", f"data.shards={shards}", f"distributed.num_workers={workers}",
                               f"train.epochs={epochs}", f"train.eval_every={epochs}",
                               *overrides])
    with PeakMemory(earlier_workers) as memory:
        result = fit_on_ray(cfg, run_dir)
    earlier_workers.update(memory.peak_kib)
    rows = [r for r in RunDirectory(run_dir).read_metrics() if r["split"] == "train"][1:]
    steps_per_epoch = result.report["steps"] // epochs
    images_per_s = statistics.median(r["images_per_s"] for r in rows)
    batch = cfg.data.batch_size * workers
    return {"workers": workers, "batch_per_worker": cfg.data.batch_size, "steps_per_epoch": steps_per_epoch,
            "images_per_s": round(images_per_s, 1), "steps_per_s": round(images_per_s / batch, 2),
            "peak_rss_mib_per_worker": memory.per_worker_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="2 epochs, no MLflow: checks that the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "worker_scaling.json")
    args = parser.parse_args()
    epochs = 2 if args.smoke else args.epochs
    overrides = ["tracking.enabled=false"] if args.smoke else []  # a smoke run checks the script, not MLflow
    load_before = os.getloadavg()[0]  # other jobs on a shared machine take cores from the workers
    ensure_ray(num_cpus_needed=2)
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        for split, source in builtin_sources(DataConfig(name="digits_lt")).items():
            write_shards(source, shards, split, 100, seed=0, progress=False)
        seen: set[int] = set()
        rows = [measure(shards, Path(tmp) / f"w{workers}", workers, epochs, seen, overrides) for workers in (1, 2)]
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    results = {"cpus": os.cpu_count(), "epochs": epochs, "rows": rows, "images_per_s_speedup_2_vs_1": round(speedup, 3),
               "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"2 workers / 1 worker, images/s: {speedup:.2f}x ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
