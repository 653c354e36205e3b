"""Step time of AllNC against CE, and what each part of AllNC adds, with the same model and batch.

    python -m bench.step_time                                  # every shape, ~11 min on 2 busy cores
    python -m bench.step_time --smoke --out /tmp/step_time.json

Shapes: the small CNN on digits (8x8x1, batch 32, K=10) and ResNet-32 on CIFAR (32x32x3, batch 128,
K=100). One training step is `engine.step.train_step` (forward, losses, backward, SGD update), built by
bench/step_setup.py. Timed per shape, all built first and then run in interleaved rounds:
  - CE, and CE with one part of AllNC switched on (HyCon, P2P, GBBN re-balanced by sampler, GBBN
    re-balanced by loss), by config overrides (CONFIGS);
  - AllNC, and AllNC with one part switched off, or with GBBN re-balanced by loss (the cheap path);
  - the AllNC step's class-mean trackers alone (one `ClassMeanTracker.update` per branch, and its
    backward), since no config switches them on without a loss that uses them;
  - the AllNC objective alone (all losses forward, `values()`, backward, on the network's output).
Each ratio is the median over rounds of (time / CE's time in the same round): the machine is shared
and its load drifts, so only figures measured side by side are compared. On the CPU, time is the
process's CPU time, with one intra-op thread by default: on a loaded machine wall time counts the
time other jobs hold the core, and two OpenMP threads wait on each other at every operator (a 5 ms
small-CNN step took 680 ms at load 6 on 2 cores), which inflates op-heavy workloads far more than
others. On a GPU, time is wall time between device synchronisations.
Per training image, the GBBN paths (GBBN_PATHS) at the CIFAR shape, at ResNet-50 / K = 1000 (PATH_SHAPES:
64x64 images, batch 16, so that it runs on a CPU) and at the 1000-class proxy's small CNN: CE and AllNC's
paper form (`allnc_paper`) with separate last stages re-balanced by sampler or by loss, and with one
shared last stage (gbbn.shared_stage) by loss (the light path) or by sampler; AllNC's default, the
light path with its own losses; LA with the cosine classifier chosen at 100 classes; and AllNC as
chosen at 1000 classes (one branch, cosine classifier) and at 100 (two branches, cosine classifier). A
step trains on B images, or 2B with the sampler's second batch; the ratio per image is the ratio per
step times B_CE / B_path.
Also recorded: FLOPs of one step (torch.utils.flop_counter: convolutions and matmuls, forward and
backward), what each ratio would be if time followed compute; the operator count of one AllNC objective call; and a
torch.profiler table of the AllNC step at the CIFAR shape. Writes JSON (default
bench/results/step_time.json); `python -m bench.publish` turns it into docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from allnc_dist.engine.local_runtime import pick_device
from bench.step_setup import StepSetup, synchronize

HERE = Path(__file__).parent

# name -> (model overrides, image shape, batch, K); class_mean_sync.py uses it too.
SHAPES = {
    "small_cnn digits 8x8 b32": (["model.arch=small_cnn"], (1, 8, 8), 32, 10),
    "resnet32 cifar 32x32 b128": (["model.arch=resnet32"], (3, 32, 32), 128, 100),
}
TARGET_SHAPE = "resnet32 cifar 32x32 b128"  # the target's shape, and the profiled one

# name -> (method overrides, description)
CONFIGS = {
    "ce": (["method.preset=ce"], "CE, one branch"),
    "ce+hycon": (["method.preset=ce", "method.hycon.weight=1"], "CE + HyCon (and its class-mean tracker)"),
    "ce+p2p": (["method.preset=ce", "method.p2p.weight=1"], "CE + P2P (and its class-mean tracker)"),
    "ce+gbbn_sampler": (["method.preset=ce", "method.gbbn.enabled=true", "method.gbbn.rebalance=reversed"],
                        "CE + GBBN re-balanced by sampler (BBN)"),
    "ce+gbbn_loss": (["method.preset=ce", "method.gbbn.enabled=true", "method.gbbn.rebalance=logit_adjust"],
                     "CE + GBBN re-balanced by loss"),
    "allnc": (["method.preset=allnc_paper"], "AllNC-paper (GBBN re-balanced by sampler)"),
    "allnc-hycon": (["method.preset=allnc_paper", "method.hycon.weight=0"], "AllNC-paper without HyCon"),
    "allnc-p2p": (["method.preset=allnc_paper", "method.p2p.weight=0"], "AllNC-paper without P2P"),
    "allnc-gbbn": (["method.preset=allnc_paper", "method.gbbn.enabled=false"], "AllNC-paper without GBBN (one branch)"),
    "allnc_gbbn_loss": (["method.preset=allnc_paper", "method.gbbn.rebalance=logit_adjust"],
                        "AllNC-paper with GBBN re-balanced by loss (the cheap path)"),
}
# The GBBN paths timed per training image: name -> (method overrides, description)
GBBN_PATHS = {
    "ce": CONFIGS["ce"],
    "allnc": (CONFIGS["allnc"][0], "(a) separate last stages, re-balanced by sampler (the paper form)"),
    "allnc_gbbn_loss": (CONFIGS["allnc_gbbn_loss"][0], "(b) separate last stages, re-balanced by loss"),
    "allnc_shared_loss": (["method.preset=allnc_paper", "method.gbbn.rebalance=logit_adjust",
                           "method.gbbn.shared_stage=true"],
                          "(c) one shared last stage, re-balanced by loss (the light path)"),
    "allnc_shared_sampler": (["method.preset=allnc_paper", "method.gbbn.shared_stage=true"],
                             "(d) one shared last stage, re-balanced by sampler"),
    "allnc_default": (["method.preset=allnc"],
                      "(e) AllNC's default: path (c) with LA, P2P contrastive + Gram gap, no HyCon"),
    # With the choices of bench/validation_choice.py: AllNC on one branch (as chosen at 1000 classes) and
    # two (at 100), and LA, each with the cosine classifier. λ_p scales P2P's loss, not its work.
    "allnc_one_branch_cosine": (["method.preset=allnc", "method.gbbn.enabled=false", "method.classifier=cosine"],
                                "(f) AllNC as chosen at 1000 classes: (e) on one branch, cosine classifier (λ_p "
                                "= 1)"),
    "la_cosine": (["method.preset=la", "method.classifier=cosine"],
                  "(g) LA with the cosine classifier, as chosen at >= 100 classes"),
    "allnc_chosen_100": (["method.preset=allnc", "method.classifier=cosine", "method.p2p.weight=0.1"],
                         "(h) AllNC as chosen at 100 classes: (e) with the cosine classifier (λ_p = 0.1)"),
}
# name -> (model overrides, image shape, batch, K), as SHAPES; ResNet-50 at a CPU-sized batch and image.
PATH_SHAPES = {
    TARGET_SHAPE: SHAPES[TARGET_SHAPE],
    "resnet50 64x64 b16 K=1000": (["model.arch=resnet50"], (3, 64, 64), 16, 1000),
    # The 1000-class proxy's network and batch (bench/tuned_study.py), where the per-class work weighs most.
    "small_cnn 8x8 b256 K=1000": (["model.arch=small_cnn"], (3, 8, 8), 256, 1000),
}
# Workloads timed beside the steps: the AllNC step's trackers alone, and its objective alone.
TRACKERS, OBJECTIVE = "allnc trackers alone", "allnc objective alone"
ALONE = {TRACKERS: "the AllNC step's class-mean updates (one per branch) and their backward",
         OBJECTIVE: "the AllNC step's losses, values() and their backward, on the network's output"}
# part -> (the CE config with it switched on, (the AllNC config with it, the one without it))
PARTS = {
    "HyCon": ("ce+hycon", ("allnc", "allnc-hycon")),
    "P2P": ("ce+p2p", ("allnc", "allnc-p2p")),
    "GBBN by sampler (reversed)": ("ce+gbbn_sampler", ("allnc", "allnc-gbbn")),
    "GBBN by loss (logit_adjust)": ("ce+gbbn_loss", ("allnc_gbbn_loss", "allnc-gbbn")),
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark mode."""

    rounds: int
    warmup: int  # untimed rounds of one call per workload, after a step under the FLOP counter
    round_s: float  # each workload runs about this long per round (at least one step)
    max_batch: int | None  # caps every shape's batch
    max_image: int | None  # caps every shape's image height and width
    profile_steps: int

    def shape(self, spec: tuple) -> tuple:
        """A shape of SHAPES or PATH_SHAPES, (model overrides, image shape, batch, K), with this mode's caps."""
        model_overrides, (channels, height, width), batch, k = spec
        side = lambda n: min(n, self.max_image or n)  # noqa: E731
        return model_overrides, (channels, side(height), side(width)), min(batch, self.max_batch or batch), k


FULL = Scale(rounds=9, warmup=2, round_s=0.3, max_batch=None, max_image=None, profile_steps=2)
SMOKE = Scale(rounds=1, warmup=1, round_s=0.0, max_batch=4, max_image=16, profile_steps=1)


# --------------------------------------------------------------------------------------- timing
def clock(device: torch.device) -> Callable[[], float]:
    """CPU time of this process on the CPU (see the module docstring), wall time on a GPU."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def step_flops(setup: StepSetup) -> int:
    """FLOPs of one step (convolutions and matmuls, forward and backward); the step counts as warm-up."""
    with FlopCounterMode(display=False) as counter:
        setup.step()
    return counter.get_total_flops()


def timed_rounds(workloads: dict[str, Callable[[], None]], steps: int, rounds: int, device) -> dict[str, list[float]]:
    """Seconds per call of each workload, one figure per round; round-robin, so load drift hits all alike."""
    seconds, now = {name: [] for name in workloads}, clock(device)
    for _ in range(rounds):
        for name, run in workloads.items():
            synchronize(device)
            started = now()
            for _ in range(steps):
                run()
            synchronize(device)
            seconds[name].append((now() - started) / steps)
    return seconds


def time_workloads(workloads: dict[str, Callable[[], None]], scale: Scale, device) -> tuple[dict[str, list[float]], int]:
    """Seconds per call of each workload, per round, after the warm-up rounds, and the steps per round
    (CE's step, workloads["ce"], runs about scale.round_s per round)."""
    warm = timed_rounds(workloads, 1, scale.warmup, device)
    steps = max(1, round(scale.round_s / warm["ce"][-1]))
    return timed_rounds(workloads, steps, scale.rounds, device), steps


def objective_op_count(run: Callable[[], None]) -> int:
    """aten operators one objective call dispatches (forward, values, backward): its eager overhead."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(1 for event in prof.events() if event.name.startswith("aten::"))


def top_ops(setup: StepSetup, steps: int, rows: int = 15) -> list[dict]:
    """torch.profiler on the CPU: the operators with the most self time in `steps` steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            setup.step()
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share_%": 100 * e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
            for e in averages[:rows]]


# ------------------------------------------------------------------------------------- measurement
def measure_shape(name: str, scale: Scale, device: torch.device) -> dict:
    model_overrides, image_shape, batch, k = scale.shape(SHAPES[name])
    setups = {c: StepSetup(model_overrides + overrides, image_shape, batch, k, device)
              for c, (overrides, _) in CONFIGS.items()}
    flops = {c: step_flops(setup) for c, setup in setups.items()}
    workloads = {c: setup.step for c, setup in setups.items()}
    workloads[TRACKERS] = setups["allnc"].trackers_alone()
    workloads[OBJECTIVE] = setups["allnc"].objective_alone()
    seconds, steps = time_workloads(workloads, scale, device)
    rows = {workload: workload_row(workload, times, seconds["ce"], batch, flops) for workload, times in seconds.items()}
    return {"model_overrides": model_overrides, "image_shape": list(image_shape), "batch": batch, "K": k,
            "feature_dim": setups["ce"].model.feature_dim, "steps_per_round": steps,
            "configs": rows, "parts": part_table(rows),
            "objective_aten_ops": objective_op_count(workloads[OBJECTIVE])}


def workload_row(workload: str, times: list[float], ce_times: list[float], batch: int, flops: dict[str, int]) -> dict:
    """One workload's figures; its ratio to CE is the median of the per-round ratios."""
    step_s = statistics.median(times)
    is_step = workload in CONFIGS
    return {
        "description": CONFIGS[workload][1] if is_step else ALONE[workload],
        "overrides": CONFIGS[workload][0] if is_step else None,
        "step_ms": step_s * 1e3,
        "ratio_vs_ce": statistics.median(t / c for t, c in zip(times, ce_times)),
        "rounds_ms": [t * 1e3 for t in times],
        "images_per_s": batch / step_s if is_step else None,
        "flops": flops.get(workload),
        "flops_vs_ce": flops[workload] / flops["ce"] if is_step else None,
    }


def part_table(rows: dict[str, dict]) -> list[dict]:
    """Each part's overhead in % of the CE step: switched on from CE, and switched off from AllNC."""
    ratio = lambda c: rows[c]["ratio_vs_ce"]  # noqa: E731
    table = [{"part": "class-mean trackers (alone, 2 branches)", "on_from_ce_%": None,
              "off_from_allnc_%": None, "alone_%": 100 * ratio(TRACKERS)}]
    for part, (on, (with_it, without_it)) in PARTS.items():
        table.append({"part": part, "on_from_ce_%": 100 * (ratio(on) - 1),
                      "off_from_allnc_%": 100 * (ratio(with_it) - ratio(without_it)), "alone_%": None})
    table.append({"part": "AllNC objective (alone: all losses, trackers, backward)", "on_from_ce_%": None,
                  "off_from_allnc_%": None, "alone_%": 100 * ratio(OBJECTIVE)})
    return table


def measure_paths(name: str, scale: Scale, device: torch.device) -> dict:
    """Each GBBN path's cost against CE at one shape of PATH_SHAPES, per step and per training image."""
    model_overrides, image_shape, batch, k = scale.shape(PATH_SHAPES[name])
    setups = {p: StepSetup(model_overrides + overrides, image_shape, batch, k, device)
              for p, (overrides, _) in GBBN_PATHS.items()}
    flops = {p: step_flops(setup) for p, setup in setups.items()}
    seconds, steps = time_workloads({p: setup.step for p, setup in setups.items()}, scale, device)
    images = {p: setup.images_per_step for p, setup in setups.items()}
    rows = {p: path_row(p, seconds[p], seconds["ce"], images, flops) for p in GBBN_PATHS}
    return {"model_overrides": model_overrides, "image_shape": list(image_shape), "batch": batch, "K": k,
            "feature_dim": setups["ce"].model.feature_dim, "steps_per_round": steps, "paths": rows}


def path_row(path: str, times: list[float], ce_times: list[float], images: dict[str, int], flops: dict[str, int]) -> dict:
    """One path's time and FLOPs against CE's, per step (median of the per-round ratios) and per training image."""
    per_step = statistics.median(t / c for t, c in zip(times, ce_times))
    images_vs_ce = images[path] / images["ce"]
    return {
        "description": GBBN_PATHS[path][1],
        "overrides": GBBN_PATHS[path][0],
        "images_per_step": images[path],
        "step_ms": statistics.median(times) * 1e3,
        "rounds_ms": [t * 1e3 for t in times],
        "ratio_vs_ce_per_step": per_step,
        "ratio_vs_ce_per_image": per_step / images_vs_ce,
        "flops_vs_ce_per_step": flops[path] / flops["ce"],
        "flops_vs_ce_per_image": flops[path] / flops["ce"] / images_vs_ce,
    }


def path_table(name: str, shape: dict) -> str:
    """The GBBN paths' ratios AllNC / CE at one shape, as printed."""
    height, width = shape["image_shape"][1:]
    lines = [f"{name}: measured at {height}x{width}, batch {shape['batch']}, K = {shape['K']}",
             f"  {'AllNC / CE':66s} {'images/step':>11s} {'time/step':>10s} {'time/image':>10s} "
             f"{'FLOPs/step':>10s} {'FLOPs/image':>11s}"]
    for path, row in shape["paths"].items():
        if path != "ce":
            lines.append(f"  {row['description']:66s} {row['images_per_step']:11d} {row['ratio_vs_ce_per_step']:10.2f} "
                         f"{row['ratio_vs_ce_per_image']:10.2f} {row['flops_vs_ce_per_step']:10.2f} "
                         f"{row['flops_vs_ce_per_image']:11.2f}")
    return "\n".join(lines)


def report_line(name: str, shape: dict) -> str:
    c = shape["configs"]
    return (f"{name:28s} CE {c['ce']['step_ms']:8.1f} ms  AllNC {c['allnc']['step_ms']:8.1f} ms  "
            f"ratio {c['allnc']['ratio_vs_ce']:.2f} (FLOPs {c['allnc']['flops_vs_ce']:.2f})  "
            f"cheap path {c['allnc_gbbn_loss']['ratio_vs_ce']:.2f} (FLOPs {c['allnc_gbbn_loss']['flops_vs_ce']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="batch <= 4, images <= 16x16, one round of one step")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see the docstring)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "step_time.json")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    torch.set_num_threads(args.threads)
    device = pick_device("auto")
    started = time.perf_counter()
    results = {"smoke": args.smoke, "device": str(device), "threads": torch.get_num_threads(),
               "cpus": os.cpu_count(), "machine": platform.platform(terse=True), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "rounds": scale.rounds, "warmup": scale.warmup,
               "clock": "wall time" if device.type == "cuda" else "process CPU time",
               "load_average_1m": {"start": os.getloadavg()[0]}, "shapes": {}}
    for name in SHAPES:
        results["shapes"][name] = shape = measure_shape(name, scale, device)
        print(report_line(name, shape), flush=True)
    results["gbbn_paths"] = {}
    for name in PATH_SHAPES:
        results["gbbn_paths"][name] = paths = measure_paths(name, scale, device)
        print(path_table(name, paths), flush=True)
    model_overrides, image_shape, batch, k = scale.shape(SHAPES[TARGET_SHAPE])
    profiled = StepSetup(model_overrides + CONFIGS["allnc"][0], image_shape, batch, k, device)
    profiled.step()  # warm-up
    results["profile"] = {"shape": TARGET_SHAPE, "config": "allnc", "steps": scale.profile_steps,
                          "top_ops": top_ops(profiled, scale.profile_steps)}
    results["load_average_1m"]["end"] = os.getloadavg()[0]  # how busy the shared machine was
    results["run_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
