"""The GPU check's report: merges what its parts left (bench/gpu_check.py) into one JSON, with the
machine's card and versions, the verdict, and a markdown summary.

    python -m bench.gpu_check_report [--out DIR] [--exit PART=STATUS ...]

Reads <out>/parts/*.json; writes <out>/gpu_check.json and <out>/gpu_check.md, prints the markdown
(ready to paste; `python -m bench.publish` puts it into docs/PERFORMANCE.md) and the PASS/FAIL line,
and exits non-zero on FAIL or when a part left no result. bench/gpu_check.sh runs it last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from bench.publish.formatting import rounded

PARTS = ("throughput", "sync", "accuracy", "distributed")
RESULTS = Path(__file__).parent / "results"


def part_path(out: Path, part: str) -> Path:
    """Where a part of the check (or the dependency step, "deps") leaves its result."""
    return out / "parts" / f"{part}.json"


def read_part(out: Path, part: str) -> dict | None:
    path = part_path(out, part)
    return json.loads(path.read_text()) if path.exists() else None


def nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int such as 2708 in older ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "card": torch.cuda.get_device_name(0) if cuda else f"no CUDA device ({platform.processor() or 'CPU'})",
        "gpus_visible": torch.cuda.device_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": nccl_version() if cuda else None,
        "python": platform.python_version(), "machine": platform.platform(terse=True), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def verdict(results: dict) -> tuple[bool, str]:
    """PASS when the accuracy run reached its threshold and every part left a result."""
    absent = [part for part in PARTS if results[part] is None]
    accuracy = results["accuracy"]
    if accuracy is None:
        return False, f"FAIL: the accuracy part left no result (parts without a result: {', '.join(absent)})"
    reached = (f"AllNC on synthetic-LT reached {accuracy['top1_%']:.1f} % overall top-1, threshold "
               f"{accuracy['threshold_top1_%']:.0f} %")
    if not accuracy["passed"]:
        return False, f"FAIL: {reached}"
    if absent:
        return False, f"FAIL: {reached}, but these parts left no result: {', '.join(absent)}"
    return True, f"PASS: {reached}"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"### GPU check: {env['card']}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, NCCL {env['nccl']}, "
        f"{env['date']}; `bash bench/gpu_check.sh` (docs/gpu_check.md).",
    ]
    step = results["throughput"]
    if step is not None:
        columns = ("shape", "ce_images_per_s", "allnc_images_per_s", "allnc_over_ce_step_time", "ce_peak_mib",
                   "allnc_peak_mib")
        lines += [
            "",
            f"**Training step** (autocast: {step['autocast']}; SGD; `train_step` as in bench/step_time.py; median of "
            f"{step['rounds']} rounds of {step['timed_steps']} steps after {step['warmup_steps']} warm-up, CE and "
            "AllNC alternating). images/s = batch / step time; the AllNC step (GBBN) also forwards a re-balanced "
            "batch of the same size. Peak = `torch.cuda.max_memory_allocated`.",
            "",
            tabulate(rounded([{c: row[c] for c in columns} for row in step["rows"]], 2), headers="keys",
                     tablefmt="github"),
        ]
    sync = results["sync"]
    if sync is not None:
        lines += [
            "",
            f"**Class-mean sync** ({sync['backend']}, world size 1, fp32, median of {sync['iters']}): {sync['note']}.",
            "",
            tabulate(rounded(sync["rows"]), headers="keys", tablefmt="github"),
        ]
    accuracy = results["accuracy"]
    if accuracy is not None:
        lines += [
            "",
            f"**Short AllNC run**: synthetic-LT, {len(accuracy['class_counts'])} classes, counts "
            f"{accuracy['class_counts']}, `{' '.join(accuracy['overrides'])}`: top-1 {accuracy['top1_%']:.1f} % "
            f"(Many {accuracy['many_%']:.1f}, Medium {accuracy['medium_%']:.1f}, Few {accuracy['few_%']:.1f}) in "
            f"{accuracy['train_s']:.0f} s; threshold {accuracy['threshold_top1_%']:.0f} %.",
        ]
    distributed = results["distributed"]
    if distributed is not None:
        lines += ["", f"**Distributed path**: skipped ({distributed['skipped']})." if "skipped" in distributed else
                  f"**Distributed path** (`{distributed['command']}`: 1 Ray Train worker, DeepSpeed ZeRO-"
                  f"{distributed['zero_stage']}, {distributed['backend']}, bf16 autocast "
                  f"{'on' if distributed['bf16_autocast'] else 'off'}): top-1 {distributed['top1_%']:.1f} % "
                  f"(Few {distributed['few_%']:.1f}) after {distributed['epochs']} epoch(s), "
                  f"{distributed['last_epoch_images_per_s']:.0f} images/s in the last epoch, "
                  f"{distributed['job_s']:.0f} s for the whole job (Ray start-up and shard writing included)."]
    return "\n".join(lines) + "\n"


def report(out: Path, exit_statuses: dict[str, int]) -> int:
    results = {
        "environment": environment(),
        "dependencies": read_part(out, "deps"),
        **{part: read_part(out, part) for part in PARTS},
        "part_exit_status": exit_statuses,
    }
    loaded = sorted({name for part in PARTS if results[part] for name in results[part]["optional_modules_loaded"]})
    results["optional_modules_loaded"] = loaded
    passed, line = verdict(results)
    results["verdict"] = line
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "gpu_check.md").write_text(text)
    print(text)
    if loaded:
        print(f"note: the check's imports loaded {', '.join(loaded)}, which it must run without")
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    print(line, flush=True)
    return 0 if passed else 1


def exit_status(text: str) -> tuple[str, int]:
    part, _, status = text.partition("=")
    if part not in PARTS or not status.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected PART=STATUS with PART in {PARTS}, got {text!r}")
    return part, int(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", type=exit_status, action="append", default=[],
                        help="PART=STATUS: how each part's process ended (recorded in the JSON)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    return report(args.out, dict(args.exit))


if __name__ == "__main__":
    sys.exit(main())
