"""Class-mean sync benchmark: the per-step cost of ClassMeanTracker's two sync modes, measured on 2
gloo processes on this machine's CPU, as a share of a measured AllNC step, and estimated at ImageNet-LT
scale from bytes moved and an assumed link bandwidth.

    python bench/class_mean_sync.py            # full: K in {10, 100, 1000} x D in {64, 512, 2048}, ~2 min
    python bench/class_mean_sync.py --smoke --out /tmp/cms.json --table /tmp/cms.md

The two modes are the library's own code, not re-implementations:
  all_reduce  one all-reduce of the fused [sums | counts] tensor, K x (D+1) floats
              (`all_reduce_sum_with_local_grad`, as `ClassMeanTracker.update` calls it);
  all_gather  one all-gather of the batch's [features | label] rows, B x (D+1) floats per worker
              (`gather_global_batch`).
For each, "sync" times the collective alone and "update" the whole `ClassMeanTracker.update` with the
mode forced (local or global per-class sums, the collective, the EMA fold). Every timed iteration
starts after a barrier; its time is the slower rank's; the figure is the median over iterations, the
two modes interleaved, after warm-up. Writes JSON (default bench/results/class_mean_sync.json) and a
markdown page (default docs/class_mean_sync.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from step_time import SHAPES, time_steps  # noqa: E402  (bench/ is not a package)

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
    step_steps: int  # timed train_step calls for the reference step time (after time_steps' 3 warm-ups)
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
        step_s = time_steps(overrides + ["method.preset=allnc"], shape, ref_batch, ref_k, scale.step_steps,
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


# ------------------------------------------------------------------------------------------ report
def fmt(rows: list[dict], digits: int = 3) -> list[dict]:
    return [{key: round(v, digits) if isinstance(v, float) else v for key, v in row.items()} for row in rows]


def markdown(results: dict) -> str:
    m, est = results["measured"], results["estimate"]
    ref = m["reference_step"]
    inp = est["inputs"]
    lines = [
        "# Class-mean sync cost",
        "",
        f"Generated by `python bench/class_mean_sync.py{' --smoke' if results['smoke'] else ''}` on "
        f"{results['machine']} ({results['cpus']} CPUs, torch {results['torch']}), {results['date']}. Rerun it to "
        "refresh this page and `bench/results/class_mean_sync.json`. The machine is shared and noisy; the "
        "figures are orders of magnitude, not a speed claim.",
        "",
        "## Measured: 2 gloo processes on this machine",
        "",
        f"{WORLD} processes (torch.multiprocessing spawn, gloo over loopback, 1 thread each), per-worker batch "
        f"B = {m['batch']}, fp32. `all_reduce`: the fused [sums | counts] tensor, K × (D+1) floats "
        "(`all_reduce_sum_with_local_grad`); `all_gather`: the batch's [features | label] rows, B × (D+1) floats "
        "per worker (`gather_global_batch`). `sync_ms`: that collective, with the local per-class sums it needs; "
        "`update_ms`: the whole `ClassMeanTracker.update` with the mode forced. `payload_kib`: one worker's "
        "contribution. Each timed iteration follows a barrier and counts the slower rank; median of "
        f"{m['iters']} iterations after {m['warmup']} warm-up, the two modes interleaved. `auto_picks`: what "
        "`sync=\"auto\"` would choose at this K, B and W = 2.",
        "",
        f"**Step time the shares refer to:** {ref['ms']:.1f} ms, one `train_step` of {ref['arch']} with the "
        f"default AllNC objective (GBBN, 2 branches) at shape {' × '.join(map(str, ref['image_shape']))}, batch "
        f"{ref['batch']}, K = {ref['K']} (`{ref['shape']}` of `bench/step_time.py`), measured by "
        "`bench/step_time.py`'s "
        f"`time_steps` in the same {WORLD} processes, concurrently, 1 thread each (slower rank; per rank: "
        f"{', '.join(f'{s * 1e3:.1f}' for s in ref['s_per_rank'])} ms; {ref['steps']} timed steps after 3 warm-up). "
        f"It includes that objective's own syncs (W = {WORLD}, D = {ref['D']}). For the other (K, D) rows the share "
        "is the sync against this one fixed step, not against a step of a model with that feature size. "
        f"`sync_%`/`update_%` are for one sync; the default AllNC step does {m['syncs_per_step']} (one per branch).",
        "",
        tabulate(fmt(m["rows"]), headers="keys", tablefmt="github"),
        "",
        "## Estimate: ImageNet-LT shape at scale",
        "",
        f"K = {inp['K']}, D = {inp['D']} (ResNet-50 features), per-GPU batch B = {inp['B']}, W = {inp['W']} workers, "
        f"fp32 (the tracker casts bf16/fp16 features to fp32 before syncing), {inp['syncs_per_step']} syncs per "
        "step (one per GBBN branch). Bytes each worker sends (and receives) per sync under ring collectives:",
        "",
        f"- all-reduce: `{est['formulas']['all_reduce_bytes_per_sync']}` (reduce-scatter then all-gather, "
        "each moving (W−1)/W of the tensor)",
        f"- all-gather: `{est['formulas']['all_gather_bytes_per_sync']}` (each worker receives the other "
        "W−1 workers' rows)",
        f"- sync time per step = `{est['formulas']['bytes_per_step']}` / bandwidth, bandwidth term only (a ring "
        "also pays 2(W−1) resp. W−1 per-hop latencies, a few µs each on NVLink, tens on Ethernet: below "
        "0.5 ms here either way)",
        "- share = sync time per step / step time; target ≤ 5 %; `break_even_step_ms`: the shortest step at "
        "which the share is still ≤ 5 %.",
        "",
        f"Bandwidths: {inp['bandwidth_gbs'][0]:g} GB/s (the `--bandwidth-gbs` argument; NVLink-class) and "
        f"{ETHERNET_GBS:g} GB/s (100 Gb Ethernet). **Step time {inp['step_ms']:g} ms is an assumption, not a "
        "measurement** (the `--step-ms` argument; default: a ResNet-50 step at batch 64 on an H100 with the AllNC "
        "objective). A tuned bf16 H100 step can be much shorter than that; `break_even_step_ms` gives the "
        f"conclusion for any step time. `library_uses`: at W·B = {inp['W'] * inp['B']} < 2K = {2 * inp['K']} "
        f"`sync=\"auto\"` picks `{est['auto_picks']}`; with the default `hycon.negatives=global` the objective "
        "all-gathers the batch for HyCon anyway and the tracker reuses it, so `all_gather` is what a default "
        "run moves whatever `sync` says.",
        "",
        tabulate(fmt(est["rows"]), headers="keys", tablefmt="github"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="K in {10, 100}, D = 64, few iterations: seconds")
    parser.add_argument("--batch", type=int, default=128, help="per-worker batch B of the measurement")
    parser.add_argument("--bandwidth-gbs", type=float, default=100.0,
                        help=f"link bandwidth of the estimate in GB/s (also printed at {ETHERNET_GBS:g})")
    parser.add_argument("--step-ms", type=float, default=250.0,
                        help="assumed step time of the estimate in ms (ResNet-50, batch 64, H100): an assumption")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "class_mean_sync.json")
    parser.add_argument("--table", type=Path, default=HERE.parent / "docs" / "class_mean_sync.md")
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
                "what": f"train_step, {ref_cfg.model.arch}, default AllNC objective, shape {list(ref_shape)}, batch "
                        f"{ref_batch}, K={ref_k}; bench/step_time.py time_steps in the same {WORLD} gloo processes "
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
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out} and {args.table} in {results['run_s']:.1f} s")


if __name__ == "__main__":
    main()
