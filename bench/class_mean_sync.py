"""Class-mean sync benchmark: the per-step cost of ClassMeanTracker's two sync modes, measured on 2
gloo processes on this machine's CPU, as a share of a measured AllNC step, and estimated at ImageNet-LT
scale from bytes moved and an assumed link bandwidth.

    python -m bench.class_mean_sync            # full: K in {10, 100, 1000} x D in {64, 512, 2048}, ~2 min
    python -m bench.class_mean_sync --smoke --out /tmp/cms.json

The two modes are the library's own code, not re-implementations:
  all_reduce  one all-reduce of the fused [sums | counts] tensor, K x (D+1) floats
              (`all_reduce_sum_with_local_grad`, as `ClassMeanTracker.update` calls it);
  all_gather  one all-gather of the batch's [features | label] rows, B x (D+1) floats per worker
              (`gather_global_batch`).
For each, "sync" times the collective alone and "update" the whole `ClassMeanTracker.update` with the
mode forced (local or global per-class sums, the collective, the EMA fold). Every timed iteration
starts after a barrier; its time is the slower rank's; the figure is the median over iterations, the
two modes interleaved, after warm-up. Writes JSON (default bench/results/class_mean_sync.json);
`python -m bench.publish` turns it into docs/class_mean_sync.md and a section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tabulate import tabulate

from allnc_dist.config import load_config
from allnc_dist.method.class_means import ClassMeanTracker, gather_global_batch, per_class_sums
from allnc_dist.method.collectives import all_reduce_sum_with_local_grad
from allnc_dist.models import build_backbone
from bench.step_setup import time_steps
from bench.step_time import SHAPES

HERE = Path(__file__).parent

MODES = ("all_reduce", "all_gather")
WORLD = 2
ETHERNET_GBS = 12.5  # 100 Gb/s Ethernet
TARGET_SHARE = 5.0  # %


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark mode."""

    classes: tuple[int, ...]
    dims: tuple[int, ...]
    warmup: int
    iters: int
    step_steps: int  # timed train_step calls for the reference step time (after time_steps' warm-up)
    reference: str  # a key of step_time.SHAPES: the step the shares refer to


FULL = Scale(classes=(10, 100, 1000), dims=(64, 512, 2048), warmup=5, iters=50, step_steps=5,
             reference="resnet32 cifar 32x32 b128")
# The smoke run's reference is the small CNN: 4 ResNet-32 steps alone take ~15 s on 2 shared cores.
SMOKE = Scale(classes=(10, 100), dims=(64,), warmup=2, iters=5, step_steps=1, reference="small_cnn digits 8x8 b32")


# -------------------------------------------------------------------------------------- measurement
def _slowest_rank(seconds: list[float]) -> list[float]:
    """Per-iteration time of the slower rank: a collective is done when every rank is done."""
    t = torch.tensor(seconds, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _timed(fn, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        dist.barrier()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def measure_shape(rank: int, k: int, d: int, batch: int, scale: Scale) -> list[dict]:
    gen = torch.Generator().manual_seed(1000 * k + d + rank)
    features = torch.randn(batch, d, generator=gen).requires_grad_()  # as the losses see them: with gradient
    labels = torch.randint(0, k, (batch,), generator=gen)
    trackers = {mode: ClassMeanTracker(k, d, sync=mode) for mode in MODES}

    def sync_all_reduce():  # ClassMeanTracker.update's all_reduce path, up to the collective
        sums, counts = per_class_sums(features, labels, k)
        all_reduce_sum_with_local_grad(torch.cat([sums, counts.unsqueeze(1)], dim=1))

    def sync_all_gather():  # ClassMeanTracker.update's all_gather path, up to the collective
        gather_global_batch(features, labels)

    sync = {"all_reduce": sync_all_reduce, "all_gather": sync_all_gather}
    update = {mode: (lambda t=trackers[mode]: t.update(features, labels)) for mode in MODES}
    for mode in MODES:
        _timed(sync[mode], scale.warmup)
        _timed(update[mode], scale.warmup)
    times = {(mode, what): [] for mode in MODES for what in ("sync", "update")}
    for _ in range(scale.iters):  # interleaved, so drifting machine load hits both modes alike
        for mode in MODES:
            times[mode, "sync"] += _timed(sync[mode], 1)
            times[mode, "update"] += _timed(update[mode], 1)
    picks = ClassMeanTracker(k, d, sync="auto").sync_mode(batch)
    rows = []
    for mode in MODES:
        floats = k * (d + 1) if mode == "all_reduce" else batch * (d + 1)
        rows.append({
            "K": k, "D": d, "B": batch, "mode": mode,
            "payload_kib": round(floats * 4 / 1024, 1),  # this worker's contribution, fp32
            "sync_ms": statistics.median(_slowest_rank(times[mode, "sync"])) * 1e3,
            "update_ms": statistics.median(_slowest_rank(times[mode, "update"])) * 1e3,
            "auto_picks": picks,
        })
    return rows


def worker(rank: int, store: str, out: str, scale: Scale, batch: int) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        rows = [row for k in scale.classes for d in scale.dims for row in measure_shape(rank, k, d, batch, scale)]
        # Reference step in the same processes, concurrently on both ranks: the objective finds the
        # process group and does its own class-mean syncs (W = 2), as in distributed training.
        overrides, shape, ref_batch, ref_k = SHAPES[scale.reference]
        dist.barrier()
        step_s = time_steps(overrides + ["method.preset=allnc_paper"], shape, ref_batch, ref_k, scale.step_steps,
                            torch.device("cpu"))
        per_rank = [0.0] * WORLD
        per_rank[rank] = step_s
        step_per_rank = torch.tensor(per_rank, dtype=torch.float64)
        dist.all_reduce(step_per_rank)
        if rank == 0:
            Path(out).write_text(json.dumps({"rows": rows, "step_s_per_rank": step_per_rank.tolist()}))
    finally:
        dist.destroy_process_group()


def measure(scale: Scale, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        mp.spawn(worker, args=(str(Path(tmp) / "gloo-store"), str(out), scale, batch), nprocs=WORLD, join=True)
        return json.loads(out.read_text())


# --------------------------------------------------------------------------------------- estimate
def estimate(k: int, d: int, batch: int, world: int, syncs_per_step: int, bandwidths_gbs: list[float],
             step_ms: float) -> dict:
    """Bytes each worker sends (= receives) per step under ring collectives, over a link bandwidth."""
    frac = (world - 1) / world
    per_sync = {
        "all_reduce": 2 * frac * k * (d + 1) * 4,  # ring: reduce-scatter + all-gather of K(D+1) floats
        "all_gather": frac * world * batch * (d + 1) * 4,  # ring: receive the other W-1 workers' B(D+1) floats
    }
    auto = "all_gather" if world * batch < 2 * k else "all_reduce"  # ClassMeanTracker.sync_mode's rule
    rows = []
    for mode, nbytes in per_sync.items():
        for gbs in bandwidths_gbs:
            sync_ms = syncs_per_step * nbytes / (gbs * 1e9) * 1e3
            share = 100 * sync_ms / step_ms
            rows.append({
                "mode": mode, "bandwidth_gbs": gbs, "mb_per_step": syncs_per_step * nbytes / 1e6,
                "sync_ms_per_step": sync_ms, "share_%": share, "meets_5%": share <= TARGET_SHARE,
                "break_even_step_ms": sync_ms / (TARGET_SHARE / 100),  # slowest step at which share = 5 %
                "library_uses": mode == auto,
            })
    return {
        "inputs": {"K": k, "D": d, "B": batch, "W": world, "syncs_per_step": syncs_per_step,
                   "bytes_per_float": 4, "bandwidth_gbs": bandwidths_gbs, "step_ms": step_ms,
                   "step_ms_is": "assumption, not a measurement", "target_share_%": TARGET_SHARE},
        "formulas": {
            "all_reduce_bytes_per_sync": "2 * (W-1)/W * K*(D+1)*4",
            "all_gather_bytes_per_sync": "(W-1)/W * W*B*(D+1)*4 = (W-1)*B*(D+1)*4",
            "bytes_per_step": "syncs_per_step * bytes_per_sync",
            "sync_time": "bytes_per_step / bandwidth (bandwidth term only: per-hop latency left out)",
            "share": "sync_time / step_ms",
        },
        "auto_picks": auto,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="K in {10, 100}, D = 64, few iterations: seconds")
    parser.add_argument("--batch", type=int, default=128, help="per-worker batch B of the measurement")
    parser.add_argument("--bandwidth-gbs", type=float, default=100.0,
                        help=f"link bandwidth of the estimate in GB/s (also printed at {ETHERNET_GBS:g})")
    parser.add_argument("--step-ms", type=float, default=250.0,
                        help="assumed step time of the estimate in ms (ResNet-50, batch 64, H100): an assumption")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "class_mean_sync.json")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    started = time.perf_counter()

    raw = measure(scale, args.batch)
    overrides, ref_shape, ref_batch, ref_k = SHAPES[scale.reference]
    ref_cfg = load_config(None, overrides)
    ref_dim = build_backbone(ref_cfg.model, ref_shape[0]).feature_dim
    step_s = max(raw["step_s_per_rank"])
    rows = raw["rows"]
    for row in rows:
        row["sync_%"] = 100 * row["sync_ms"] / (step_s * 1e3)
        row["update_%"] = 100 * row["update_ms"] / (step_s * 1e3)
    bandwidths = [args.bandwidth_gbs] + ([ETHERNET_GBS] if args.bandwidth_gbs != ETHERNET_GBS else [])
    results = {
        "smoke": args.smoke,
        "machine": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "measured": {
            "world_size": WORLD, "backend": "gloo", "threads_per_process": 1, "batch": args.batch,
            "warmup": scale.warmup, "iters": scale.iters, "syncs_per_step": 2, "scale": asdict(scale),
            "reference_step": {
                "what": f"train_step, {ref_cfg.model.arch}, AllNC-paper objective, shape {list(ref_shape)}, batch "
                        f"{ref_batch}, K={ref_k}; bench/step_setup.py time_steps in the same {WORLD} gloo processes "
                        "(1 thread each, concurrently); slower rank",
                "shape": scale.reference, "arch": ref_cfg.model.arch, "image_shape": list(ref_shape),
                "batch": ref_batch, "K": ref_k, "D": ref_dim,
                "ms": step_s * 1e3, "s_per_rank": raw["step_s_per_rank"], "steps": scale.step_steps,
            },
            "rows": rows,
        },
        "estimate": estimate(1000, 2048, 64, 8, 2, bandwidths, args.step_ms),
    }
    results["run_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for rows in (results["measured"]["rows"], results["estimate"]["rows"]):
        print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f"), end="\n\n")
    print(f"wrote {args.out} in {results['run_s']:.1f} s")


if __name__ == "__main__":
    main()
