"""Which of the project's dependencies import here, and what to install when the GPU check cannot run.

    python -m bench.gpu_check_deps [--json PATH] [--timeout-s S] [--required NAME ...] [--optional NAME ...]

Standard library only: it runs before anything else of the GPU check (bench/gpu_check.sh), on a
machine where even torch may be missing. Each module is imported for real, in its own subprocess,
all at once under one time limit, so that a broken or hanging import (a CUDA library that does not
load, a package probing hardware) is reported as such and cannot take the check down with it.

Exit status 3 when a required module does not import; the last line then names the pip packages.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Import name -> why the GPU check needs it. matplotlib and scikit-learn are needed only because
# the package imports them at module level on the way to the pieces the check uses.
REQUIRED = {
    "torch": "every measurement",
    "torchvision": "allnc_dist.models (ResNet-50), allnc_dist.data (transforms)",
    "numpy": "allnc_dist.data.synthetic, allnc_dist.shards",
    "PIL": "allnc_dist.shards (imported by allnc_dist.engine.streams)",
    "pydantic": "allnc_dist.config",
    "yaml": "allnc_dist.config",
    "tqdm": "allnc_dist.engine.progress",
    "tabulate": "the check's markdown tables",
    "matplotlib": "allnc_dist.metrics.plots, imported at module level via allnc_dist.engine",
    "sklearn": "allnc_dist.data.digits, imported at module level via allnc_dist.data",
}
# The distributed and tracking stack: the check's own processes never import them; its distributed
# part runs jobs/digits_lt.py (which does) where Ray, DeepSpeed and WebDataset are installed.
OPTIONAL = {
    "webdataset": "shard streaming (data.source=shards)",
    "ray": "the distributed engine",
    "deepspeed": "the distributed engine",
    "mlflow": "run tracking",
}
PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
MISSING_EXIT = 3


def try_import(name: str, timeout_s: float) -> dict:
    """Import `name` in a fresh interpreter; its version, or the error it raised."""
    probe = f"import {name} as m; print(getattr(m, '__version__', 'unknown'))"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"imports": False, "error": f"import did not finish in {timeout_s:g} s"}
    if done.returncode == 0:
        return {"imports": True, "version": done.stdout.strip().splitlines()[-1]}
    lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
    return {"imports": False, "error": lines[-1]}


def check(required: dict[str, str], optional: dict[str, str], timeout_s: float) -> dict[str, dict]:
    """Every module's import result, with whether the check requires it and what uses it."""
    names = [*required, *optional]
    with ThreadPoolExecutor(len(names)) as pool:  # all at once: the whole check ends within timeout_s
        results = dict(zip(names, pool.map(lambda name: try_import(name, timeout_s), names)))
    return {name: {**results[name], "required": name in required, "used_by": {**optional, **required}[name]}
            for name in names}


def missing_required(results: dict[str, dict]) -> list[str]:
    return [name for name, r in results.items() if r["required"] and not r["imports"]]


def summary(results: dict[str, dict]) -> str:
    """One line per module, then the verdict: what is missing and the pip command that installs it."""
    lines = []
    for name, r in results.items():
        state = f"ok {r['version']}" if r["imports"] else f"MISSING ({r['error']})"
        kind = "required" if r["required"] else "optional"
        lines.append(f"  {name:12s} {kind:9s} {state}  [{r['used_by']}]")
    absent_optional = [n for n, r in results.items() if not r["required"] and not r["imports"]]
    if absent_optional:
        lines.append(f"optional, not needed by this check: {', '.join(absent_optional)} missing")
    missing = missing_required(results)
    if missing:
        packages = " ".join(PIP_NAMES.get(name, name) for name in missing)
        lines.append(f"MISSING required modules: {', '.join(missing)}. "
                     f"Install them and rerun: {Path(sys.executable).name} -m pip install {packages}")
    else:
        lines.append("all required modules import")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--timeout-s", type=float, default=40.0, help="time limit of the imports, all together")
    parser.add_argument("--required", nargs="*", help="check these import names as required instead")
    parser.add_argument("--optional", nargs="*", help="check these import names as optional instead")
    args = parser.parse_args()
    required, optional = (
        defaults if names is None else {name: defaults.get(name, "named on the command line") for name in names}
        for defaults, names in ((REQUIRED, args.required), (OPTIONAL, args.optional))
    )
    results = check(required, optional, args.timeout_s)
    print(summary(results), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return MISSING_EXIT if missing_required(results) else 0


if __name__ == "__main__":
    sys.exit(main())
