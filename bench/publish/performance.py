"""docs/PERFORMANCE.md from the benches' JSON: the performance targets and whether each is met, the
step-time sections (step_sections.py), the class-mean sync cost, loader throughput, 1 -> 2 worker
scaling with peak memory per worker, and the GPU check.

Reads the results folder: step_time.json (required); step_time_before.json (the same bench on the
method code before the hot-path changes, for the before/after table); class_mean_sync.json,
loader.json, worker_scaling.json, and gpu_check.json with gpu_check.md. A missing optional file leaves
its section saying which command makes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.publish.formatting import PUBLISH, load_note, num, shown, table
from bench.publish.step_sections import (STEP_TARGET, TARGET_SHAPE, gbbn_paths_section, profile_section,
                                         step_section)

IMAGE_TARGET = 1.05  # AllNC time per training image / CE's, at the CIFAR shape (issue 13)
SYNC_TARGET_PCT = 5.0  # class-mean sync, % of step time, at ImageNet-LT scale
REGENERATE = {  # input -> the command that measures it
    "step_time.json": "python -m bench.step_time",
    "class_mean_sync.json": "python -m bench.class_mean_sync",
    "loader.json": "python -m bench.loader",
    "worker_scaling.json": "python -m bench.worker_scaling",
    "gpu_check.json": "bash bench/gpu_check.sh",
}
# What was changed in the AllNC step's hot path, and why each change keeps every result bit for bit.

def load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def missing(name: str) -> list[str]:
    return [f"Not measured yet: `{name}` is absent. Run `{REGENERATE[name]}`.", ""]

def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


# ------------------------------------------------------------------------------------------ targets
def step_target(step: dict) -> tuple[str, bool]:
    """AllNC's step time against CE's at the CIFAR shape: the default's (GBBN path e), with the paper form's
    beside it; without path timings (an older JSON), the paper form's alone decides."""
    shape = step["shapes"][TARGET_SHAPE]
    configs = shape["configs"]
    ratio, cheap = configs["allnc"]["ratio_vs_ce"], configs["allnc_gbbn_loss"]["ratio_vs_ce"]
    smoke = " (smoke run: not a measurement)" if step["smoke"] else ""
    text = (f"{ratio:.2f}× with the paper form (GBBN re-balanced by sampler), {cheap:.2f}× with GBBN "
            f"re-balanced by loss (the cheap path); FLOP ratios {configs['allnc']['flops_vs_ce']:.2f}× and "
            f"{configs['allnc_gbbn_loss']['flops_vs_ce']:.2f}×; ResNet-32, {shape['image_shape']}, batch "
            f"{shape['batch']}, K = {shape['K']}{smoke}")
    default = step.get("gbbn_paths", {}).get(TARGET_SHAPE, {}).get("paths", {}).get("allnc_default")
    if default is None:
        return "Measured: " + text, ratio <= STEP_TARGET
    return (f"Measured: AllNC's default (path e below) {default['ratio_vs_ce_per_step']:.2f}×; " + text,
            default["ratio_vs_ce_per_step"] <= STEP_TARGET)


def image_target(step: dict) -> tuple[str, bool]:
    """AllNC's time per training image against CE's at the CIFAR shape, on each GBBN path; met when
    AllNC's default (path e) meets it."""
    paths = step["gbbn_paths"][TARGET_SHAPE]["paths"]
    text = "Measured: " + "; ".join(f"{path['description']}: {path['ratio_vs_ce_per_image']:.2f}×"
                                    for name, path in paths.items() if name != "ce")
    return text, paths["allnc_default"]["ratio_vs_ce_per_image"] <= IMAGE_TARGET


def sync_target(sync: dict) -> tuple[str, bool]:
    est = sync["estimate"]
    used = [row for row in est["rows"] if row["library_uses"]]
    shares = [f"{row['share_%']:.2f} % at {row['bandwidth_gbs']:g} GB/s ({row['mode']}, "
              f"{row['sync_ms_per_step']:.2f} ms of an assumed {est['inputs']['step_ms']:g} ms step)" for row in used]
    text = "Estimated (from bytes and bandwidth): " + "; ".join(shares)
    text += f"; it holds for any step longer than {max(row['break_even_step_ms'] for row in used):.1f} ms"
    return text, all(row["share_%"] <= SYNC_TARGET_PCT for row in used)


def loader_target(loader: dict) -> tuple[str, bool]:
    rows = [row for row in loader["throughput"]["rows"] if row["reader"] == "shards (streaming)"]
    text = "Measured: " + ", ".join(f"{row['vs_map_style']:.2f}× map-style with {row['loader_workers']} loader "
                                    "worker(s)" for row in rows)
    return text, all(row["vs_map_style"] >= 1.0 for row in rows)


def targets_section(step: dict, sync: dict | None, loader: dict | None) -> list[str]:
    checks = [
        (f"AllNC step time ≤ {STEP_TARGET} × CE at CIFAR shape", step_target(step)),
        (f"AllNC time per training image ≤ {IMAGE_TARGET} × CE at CIFAR shape",
         image_target(step) if "gbbn_paths" in step else ("no `gbbn_paths` in `step_time.json`", None)),
        (f"Class-mean sync ≤ {SYNC_TARGET_PCT:g} % of step time at ImageNet-LT scale (K = 1000, D = 2048, "
         "per-GPU batch 64, 8 workers)", sync_target(sync) if sync else ("`class_mean_sync.json` is absent", None)),
        ("Loader: streaming throughput ≥ map-style baseline",
         loader_target(loader) if loader else ("`loader.json` is absent", None)),
    ]
    lines = ["## Targets", ""]
    lines += [f"- {name}: {verdict(met)}. {figures}." for name, (figures, met) in checks]
    return lines + [""]

# --------------------------------------------------------------------------------- other sections
def sync_section(sync: dict | None) -> list[str]:
    lines = ["## Class-mean sync: all-reduce against all-gather", ""]
    if sync is None:
        return lines + missing("class_mean_sync.json")
    m, est = sync["measured"], sync["estimate"]
    inp, ref = est["inputs"], m["reference_step"]
    measured = [{"K": row["K"], "D": row["D"], "mode": row["mode"], "payload KiB": num(row["payload_kib"], 1),
                 "sync ms": num(row["sync_ms"]), "update ms": num(row["update_ms"]),
                 "sync % of step": num(row["sync_%"], 3),
                 "auto picks": row["auto_picks"]} for row in m["rows"]]
    estimated = [{"mode": row["mode"], "GB/s": f"{row['bandwidth_gbs']:g}", "MB per step": num(row["mb_per_step"]),
                  "ms per step": num(row["sync_ms_per_step"], 3), "% of step": num(row["share_%"], 3),
                  f"≤ {SYNC_TARGET_PCT:g} %": "yes" if row["meets_5%"] else "no",
                  "step ms at 5 %": num(row["break_even_step_ms"]),
                  "library uses": "yes" if row["library_uses"] else "no"}
                 for row in est["rows"]]
    k, d, b, w = inp["K"], inp["D"], inp["B"], inp["W"]
    return lines + [
        f"`bench/class_mean_sync.py` ({sync['date']}; details in docs/class_mean_sync.md). Measured: "
        f"{m['world_size']} {m['backend']} processes on this machine, per-worker batch {m['batch']}, fp32, median of "
        f"{m['iters']} iterations; `sync %` is against one AllNC step of {ref['arch']} measured in the same processes "
        f"({ref['ms']:.0f} ms); the AllNC-paper step syncs {m['syncs_per_step']} times (one per branch).",
        "",
        table(measured),
        "",
        f"**ImageNet-LT estimate** (K = {k}, D = {d}, per-GPU batch B = {b}, W = {w} workers, "
        f"{inp['syncs_per_step']} syncs per step, fp32). Bytes each worker sends per sync under ring collectives:",
        "",
        f"- all-reduce: `{est['formulas']['all_reduce_bytes_per_sync']}` = 2 × {w - 1}/{w} × {k} × {d + 1} × 4 "
        f"= {2 * (w - 1) / w * k * (d + 1) * 4 / 1e6:.2f} MB",
        f"- all-gather: `{est['formulas']['all_gather_bytes_per_sync']}` = {w - 1} × {b} × {d + 1} × 4 "
        f"= {(w - 1) * b * (d + 1) * 4 / 1e6:.2f} MB",
        f"- share of step = {inp['syncs_per_step']} × bytes / bandwidth / step time (bandwidth term only); step time "
        f"{inp['step_ms']:g} ms is an assumption (ResNet-50, batch 64, H100), not a measurement. Target: ≤ "
        f"{SYNC_TARGET_PCT:g} %. At W·B = {w * b} < 2K = {2 * k} the library all-gathers (`sync=auto`, and HyCon's "
        "global negatives gather the batch anyway).",
        "",
        table(estimated),
        "",
    ]


def loader_section(loader: dict | None) -> list[str]:
    lines = ["## Loader throughput: streaming shards against map-style files", ""]
    if loader is None:
        return lines + missing("loader.json")
    tp = loader["throughput"]
    rows = [{"reader": row["reader"], "loader workers": row["loader_workers"],
             "samples/s": num(row["samples_per_s"], 0), "× map-style": num(row["vs_map_style"])} for row in tp["rows"]]
    return lines + [
        f"`bench/loader.py` ({loader['date']}; details in docs/loader_benchmark.md): {tp['samples']} synthetic-LT PNG "
        f"images of shape {tp['image_shape']}, batch {tp['batch_size']}, the same decoding and augmentation in both "
        f"readers; median of {loader['rounds']} interleaved rounds of {loader['batches']} batches. Target: streaming "
        "≥ map-style.",
        "",
        table(rows),
        "",
    ]


def scaling_section(scaling: dict | None) -> list[str]:
    lines = ["## Worker scaling (1 → 2 Ray Train workers, CPU) and peak memory per worker", ""]
    if scaling is None:
        return lines + missing("worker_scaling.json")
    rows = []
    for row in scaling["rows"]:
        peaks = row.get("peak_rss_mib_per_worker")
        rows.append({"workers": row["workers"], "batch per worker": row["batch_per_worker"],
                     "images/s": num(row["images_per_s"], 0), "steps/s": num(row["steps_per_s"]),
                     "peak RSS per worker, MiB": ", ".join(f"{p:.0f}" for p in peaks) if peaks else "not measured"})
    return lines + [
        f"`bench/worker_scaling.py`: AllNC on digits-LT shards, DeepSpeed ZeRO-1 over gloo, {scaling['epochs']} "
        "epochs, "
        f"the first left out; {scaling['cpus']} CPUs shared with Ray itself, so the speed-up is bounded well below 2. "
        "Peak RSS: each Train worker process's high-water mark (VmHWM, as `ru_maxrss`), including torch, DeepSpeed "
        "and Ray's own libraries." + load_note(scaling),
        "",
        table(rows),
        "",
        f"2 workers / 1 worker, images/s: {scaling['images_per_s_speedup_2_vs_1']:.2f}×{overloaded_note(scaling)}.",
        "",
    ]


def overloaded_note(scaling: dict) -> str:
    """Why 2 workers can be slower than 1: other jobs held more runnable threads than there are cores."""
    load = scaling.get("load_average_1m")
    if scaling["images_per_s_speedup_2_vs_1"] >= 1 or not load or max(load.values()) <= scaling["cpus"]:
        return ""
    return (f" (below 1: the load average, {max(load.values()):.1f}, exceeded the {scaling['cpus']} cores, so the "
            "two workers, Ray and the other jobs competed for them)")


def gpu_section(gpu: dict | None, summary: Path) -> list[str]:
    """The GPU check's own markdown (every part's figures, the card, the versions) and its verdict."""
    lines = ["## GPU (bench/gpu_check.sh)", ""]
    if gpu is None or not summary.exists():
        return lines + [f"not run yet: no GPU was available. `{REGENERATE['gpu_check.json']}` on a GPU machine "
                        f"writes `bench/results/gpu_check.json` and `gpu_check.md`; `{PUBLISH}` then fills this "
                        "section.", ""]
    return lines + [summary.read_text().strip(), "", f"Check: {gpu['verdict']}", ""]

# ------------------------------------------------------------------------------------------ report
def performance_page(results: Path) -> str:
    """docs/PERFORMANCE.md from the JSON in `results`."""
    step = load(results, "step_time.json")
    if step is None:
        raise SystemExit(f"{results / 'step_time.json'} is absent: run `{REGENERATE['step_time.json']}` first")
    before, sync = load(results, "step_time_before.json"), load(results, "class_mean_sync.json")
    loader, scaling = load(results, "loader.json"), load(results, "worker_scaling.json")
    gpu = load(results, "gpu_check.json")
    header = [
        "# Performance",
        "",
        f"Generated by `{PUBLISH}` from the benches' JSON in `{shown(results)}`. Step times measured "
        f"{step['date']} on {step['machine']}, {step['cpus']} CPUs (`nproc`), no GPU unless the GPU section says otherwise, torch {step['torch']}. The machine is shared with other "
        "jobs and noisy: every ratio is measured side by side within one run; absolute times are not comparable "
        "across runs.",
        "",
        "Regenerate:",
        "",
        "```",
        f"{REGENERATE['step_time.json']} && {PUBLISH}",
        "```",
        "",
        "The other inputs, when their code changes: " + ", ".join(
            f"`{command}` ({name})" for name, command in REGENERATE.items() if name != "step_time.json") + ".",
        "",
    ]
    sections = [header, targets_section(step, sync, loader), step_section(step), gbbn_paths_section(step),
                profile_section(step, before),
                sync_section(sync), loader_section(loader), scaling_section(scaling),
                gpu_section(gpu, results / "gpu_check.md")]
    return "\n".join(line for section in sections for line in section)

