"""The GPU check's measurements: AllNC step throughput against CE, the class-mean sync over NCCL, a
short AllNC training run that must reach a stated accuracy, and, where Ray, DeepSpeed and WebDataset are
installed, the product's distributed path (one Ray Train worker, DeepSpeed ZeRO, bf16). See
docs/gpu_check.md.

Run through bench/gpu_check.sh, which checks the dependencies first and gives each part its own hard
time limit; by hand, one part at a time:

    python -m bench.gpu_check throughput|sync|accuracy|distributed [--quick] [--device cuda|cpu] [--out DIR]

Each part writes <out>/parts/<part>.json; `python -m bench.gpu_check_report` then merges them. `--quick`
shrinks every size so that a CPU run takes seconds (the tests).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from allnc_dist.config import load_config
from allnc_dist.engine.trainer import train_locally
from allnc_dist.method.class_means import per_class_sums
from allnc_dist.tracking import RunDirectory
from bench.gpu_check_deps import OPTIONAL
from bench.gpu_check_report import PARTS, RESULTS, part_path
from bench.step_setup import WARMUP_STEPS, synchronize, time_steps

REPO = Path(__file__).parents[1]
DISTRIBUTED_STACK = ("ray", "deepspeed", "webdataset")  # what jobs/digits_lt.py needs beyond the check
PRESETS = ("ce", "allnc")


@dataclass(frozen=True)
class StepShape:
    """One model and input shape of the throughput part."""

    name: str
    arch: str
    image_shape: tuple[int, int, int]
    batch: int
    classes: int


@dataclass(frozen=True)
class SyncShape:
    """Class count K, feature size D and per-GPU batch B of one class-mean sync."""

    classes: int
    dim: int
    batch: int


@dataclass(frozen=True)
class Scale:
    """Every size of the check: the full one for a GPU, the quick one for a CPU smoke run."""

    step_shapes: tuple[StepShape, ...]
    timed_steps: int  # per time_steps call, after its WARMUP_STEPS steps
    rounds: int  # CE and AllNC alternate this many times per shape; the median counts
    sync_shapes: tuple[SyncShape, ...]
    sync_warmup: int
    sync_iters: int
    accuracy_overrides: tuple[str, ...]
    accuracy_threshold: float  # % overall top-1 the accuracy run must reach; see docs/gpu_check.md
    distributed_zero_stage: int
    distributed_epochs: int


ACCURACY_COMMON = (
    "name=gpu_check_synthetic_lt", "data.name=synthetic_lt", "data.num_classes=10", "data.imbalance_ratio=100",
    "method.preset=allnc", "train.bf16=true", "tracking.enabled=false", "train.seed=0",
)
FULL = Scale(
    step_shapes=(
        StepShape("resnet32 cifar 3x32x32 b128 K100", "resnet32", (3, 32, 32), 128, 100),
        StepShape("resnet50 3x224x224 b64 K1000", "resnet50", (3, 224, 224), 64, 1000),
    ),
    timed_steps=30,
    rounds=3,
    sync_shapes=(SyncShape(100, 64, 128), SyncShape(1000, 2048, 64)),
    sync_warmup=20,
    sync_iters=200,
    accuracy_overrides=(
        *ACCURACY_COMMON, "data.max_per_class=500", "data.image_size=32", "data.synthetic_test_per_class=100",
        "data.batch_size=128", "model.arch=resnet32", "train.epochs=30", "train.eval_every=30",
        "train.checkpoint_every=30",
    ),
    accuracy_threshold=25.0,
    distributed_zero_stage=2,
    distributed_epochs=10,
)
QUICK = Scale(
    step_shapes=(
        StepShape("resnet32 3x32x32 b8 K10", "resnet32", (3, 32, 32), 8, 10),
        StepShape("resnet50 3x32x32 b4 K10", "resnet50", (3, 32, 32), 4, 10),
    ),
    timed_steps=1,
    rounds=1,
    sync_shapes=FULL.sync_shapes,
    sync_warmup=2,
    sync_iters=10,
    accuracy_overrides=(
        *ACCURACY_COMMON, "data.max_per_class=200", "data.image_size=8", "data.synthetic_test_per_class=50",
        "data.batch_size=64", "model.arch=small_cnn", "train.epochs=5", "train.eval_every=5",
        "train.checkpoint_every=5",
    ),
    accuracy_threshold=25.0,
    distributed_zero_stage=1,
    distributed_epochs=1,
)


def check_device(name: str) -> torch.device:
    """The device a part runs on; on CUDA, why not where there is none."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device (torch.version.cuda = "
                             f"{torch.version.cuda}); use --device cpu --quick for a CPU smoke run")
        torch.cuda.set_device(0)
        return torch.device("cuda", 0)
    return torch.device("cpu")


# ------------------------------------------------------------------------------------- throughput
def timed_preset(shape: StepShape, preset: str, steps: int, device: torch.device) -> tuple[float, int | None]:
    """Seconds per `train_step` (bench/step_setup.py's time_steps, bf16 autocast on CUDA) and the peak GPU
    memory allocated meanwhile (None on CPU)."""
    overrides = [f"model.arch={shape.arch}", f"method.preset={preset}"]
    on_gpu = device.type == "cuda"
    if on_gpu:
        gc.collect()  # the previous call's model must not count towards this one's peak
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(overrides, shape.image_shape, shape.batch, shape.classes, steps, device)
    return seconds, torch.cuda.max_memory_allocated(device) if on_gpu else None


def measure_throughput(scale: Scale, device: torch.device) -> dict:
    seconds = {(s.name, p): [] for s in scale.step_shapes for p in PRESETS}
    peaks = {(s.name, p): [] for s in scale.step_shapes for p in PRESETS}
    for _ in range(scale.rounds):  # CE and AllNC alternate, so drifting clocks or load hit both alike
        for shape in scale.step_shapes:
            for preset in PRESETS:
                step_s, peak = timed_preset(shape, preset, scale.timed_steps, device)
                seconds[shape.name, preset].append(step_s)
                peaks[shape.name, preset].append(peak)
                print(f"  {shape.name} {preset}: {step_s * 1e3:.1f} ms/step", flush=True)
    peak_mib = lambda key: max(peaks[key]) / 2**20 if device.type == "cuda" else None  # noqa: E731
    rows = []
    for shape in scale.step_shapes:
        ce_s, allnc_s = (statistics.median(seconds[shape.name, p]) for p in PRESETS)
        rows.append({
            "shape": shape.name, "arch": shape.arch, "image_shape": list(shape.image_shape), "batch": shape.batch,
            "K": shape.classes,
            "ce_step_ms": ce_s * 1e3, "allnc_step_ms": allnc_s * 1e3,
            "ce_images_per_s": shape.batch / ce_s, "allnc_images_per_s": shape.batch / allnc_s,
            "allnc_over_ce_step_time": allnc_s / ce_s,
            "ce_peak_mib": peak_mib((shape.name, "ce")), "allnc_peak_mib": peak_mib((shape.name, "allnc")),
        })
    return {"timed_steps": scale.timed_steps, "warmup_steps": WARMUP_STEPS, "rounds": scale.rounds,
            "autocast": "bf16" if device.type == "cuda" else "none (fp32 on CPU)", "rows": rows}


# ------------------------------------------------------------------------------------------ sync
def timed_call(fn, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def measure_sync_shape(shape: SyncShape, scale: Scale, device: torch.device) -> dict:
    """One all-reduce of the fused [sums | counts] tensor (K x (D+1), what ClassMeanTracker syncs) and one
    all-gather of the fused [features | label] rows (B x (D+1), what gather_global_batch moves), fp32.

    The collectives are called directly: at world size 1 the library's wrappers skip them.
    """
    k, d, b = shape.classes, shape.dim, shape.batch
    features = torch.randn(b, d, device=device)
    labels = torch.randint(0, k, (b,), device=device)
    sums, counts = per_class_sums(features, labels, k)
    class_sums = torch.cat([sums, counts.unsqueeze(1)], dim=1)
    batch_rows = torch.cat([features, labels.float().unsqueeze(1)], dim=1)
    gathered = [torch.empty_like(batch_rows) for _ in range(dist.get_world_size())]
    ops = {"all_reduce": lambda: dist.all_reduce(class_sums),
           "all_gather": lambda: dist.all_gather(gathered, batch_rows)}
    times = {name: [] for name in ops}
    for i in range(scale.sync_warmup + scale.sync_iters):
        for name, op in ops.items():  # interleaved, as in the throughput part
            seconds = timed_call(op, device)
            if i >= scale.sync_warmup:
                times[name].append(seconds)
    return {
        "K": k, "D": d, "B": b,
        "all_reduce_kib": class_sums.numel() * 4 / 1024,
        "all_reduce_us": statistics.median(times["all_reduce"]) * 1e6,
        "all_gather_kib": batch_rows.numel() * 4 / 1024,
        "all_gather_us": statistics.median(times["all_gather"]) * 1e6,
    }


def measure_sync(scale: Scale, device: torch.device) -> dict:
    backend = "nccl" if device.type == "cuda" else "gloo"
    # One process on one machine: keep the rendezvous and any socket on loopback.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", world_size=1, rank=0)
        try:
            rows = [measure_sync_shape(shape, scale, device) for shape in scale.sync_shapes]
        finally:
            dist.destroy_process_group()
    return {
        "backend": backend, "world_size": 1, "warmup": scale.sync_warmup, "iters": scale.sync_iters,
        "what": "median wall time of one collective, synchronised before and after",
        "note": "one process: the collective moves no data between GPUs, so this is the launch overhead "
                "of a collective on this stack, not bandwidth (see bench/class_mean_sync.py for the estimate)",
        "rows": rows,
    }


# -------------------------------------------------------------------------------------- accuracy
def run_accuracy(scale: Scale, device: torch.device) -> dict:
    overrides = [*scale.accuracy_overrides, f"train.device={device.type}"]
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as run_dir:  # the figures go into the JSON; the run dir is not kept
        result = train_locally(cfg, run_dir)
    metrics = result.report["metrics"]
    return {
        "overrides": overrides, "class_counts": result.report["class_counts"],
        "top1_%": metrics["acc_top1"], "many_%": metrics["acc_many"], "medium_%": metrics["acc_medium"],
        "few_%": metrics["acc_few"], "threshold_top1_%": scale.accuracy_threshold,
        "passed": metrics["acc_top1"] >= scale.accuracy_threshold, "train_s": result.report["seconds"],
    }


# ----------------------------------------------------------------------------------- distributed
def distributed_command(scale: Scale, device: torch.device, out: str) -> list[str]:
    """jobs/digits_lt.py as a user runs it: AllNC on digits-LT shards, one Ray Train worker (its GPU, or
    the CPU with gloo), DeepSpeed ZeRO; bf16 autocast is the config's default on CUDA."""
    epochs = scale.distributed_epochs
    return [sys.executable, "jobs/digits_lt.py", "--methods", "allnc", "--num-workers", "1",  # run in REPO
            "--gpus-per-worker", "1" if device.type == "cuda" else "0",
            "--zero-stage", str(scale.distributed_zero_stage), "--out", out, f"train.epochs={epochs}",
            f"train.eval_every={epochs}", f"train.checkpoint_every={epochs}",
            "tracking.enabled=false"]


def run_distributed(scale: Scale, device: torch.device) -> dict:
    """The distributed path, where its stack is installed (skipped, not failed, where it is not). A job
    that fails ends the part with its output's tail, so the report has no figures for it."""
    missing = [name for name in DISTRIBUTED_STACK if importlib.util.find_spec(name) is None]  # finds, never imports
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as out:
        command = distributed_command(scale, device, out)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        job_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"distributed: the job exited with status {done.returncode}; its output ends with:\n"
                             + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
        run = RunDirectory(Path(out) / "allnc")
        metrics = json.loads(run.report_path.read_text())["metrics"]
        train = [row for row in run.read_metrics() if row["split"] == "train"]
    return {
        "command": " ".join(command[1:]), "zero_stage": scale.distributed_zero_stage,
        "backend": "nccl" if device.type == "cuda" else "gloo", "bf16_autocast": device.type == "cuda",
        "epochs": len(train), "job_s": job_s, "last_epoch_images_per_s": train[-1]["images_per_s"],
        "top1_%": metrics["acc_top1"], "few_%": metrics["acc_few"],
    }


def run_part(part: str, quick: bool, device_name: str, out: Path) -> None:
    scale = QUICK if quick else FULL
    device = check_device(device_name)
    if device.type == "cpu":
        # A CPU run is a smoke run on shared cores, where OpenMP threads competing with other jobs
        # make a step up to 10x slower than one thread does.
        torch.set_num_threads(1)
    started = time.perf_counter()
    measure = {"throughput": measure_throughput, "sync": measure_sync, "accuracy": run_accuracy,
               "distributed": run_distributed}[part]
    result = measure(scale, device)
    result.update(
        quick=quick, device=str(device), wall_s=time.perf_counter() - started,
        # The check must run without the distributed and tracking stack: nothing on its path may load it.
        optional_modules_loaded=sorted(name for name in OPTIONAL if name in sys.modules),
    )
    path = part_path(out, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{part}: done in {result['wall_s']:.1f} s, wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run of seconds")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run_part(args.part, args.quick, args.device, args.out)


if __name__ == "__main__":
    main()
