"""The job entry points' shared command line (`jobs/*.py`): one or more methods trained on Ray Train
workers (the default) or in this process (`--local`), then the results table and the heatmaps.

    python jobs/<job>.py [--config YAML] [--local] [--data SHARDS] [--num-workers N] [--gpus-per-worker G]
                         [--zero-stage S] [--storage-path PATH] [--methods allnc,ce] [--out DIR] [--debug]
                         [section.field=value ...]

The Ray engine streams shards. Without `--data`, a built-in dataset (digits-LT, synthetic-LT,
CIFAR-LT with data.root) is first written as shards under `<out>/shards`; the configs are validated
as the shard-streaming runs they become. Before any work starts, every config is validated and the
tracking server must answer. An error ends the job with one line on stderr and an exit status by
kind (allnc_dist/errors.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .config import RunConfig, TrackingConfig, load_raw
from .errors import TrackingServerError, add_debug_flag, report_errors
from .method_runs import method_configs, run_methods
from .tracking import resolve_tracking_uri

HEALTH_TIMEOUT_S = 10.0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", type=Path, help="YAML config (default: the job's own, in jobs/configs/)")
    p.add_argument("--local", action="store_true", help="train in this process (one GPU or the CPU), no Ray")
    p.add_argument("--data", type=Path, help="shard folder written by `allnc shards` (holds train/ and test/)")
    p.add_argument("--num-workers", help="Ray Train workers (distributed.num_workers); M..N: elastic, M to N")
    p.add_argument("--min-workers", type=int,
                   help="elastic: go on with as few as this many workers when nodes go (distributed.min_workers)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker; 0 trains on CPUs with gloo")
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage")
    p.add_argument("--storage-path", help="Ray Train storage for checkpoints (shared storage for multi-node)")
    p.add_argument("--methods", help="comma-separated method presets (default: the config's)")
    p.add_argument("--out", type=Path, help="output folder (default: <storage path or runs>/<name>-<time>)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", help="config overrides, section.field=value")
    return p


def parse_arguments(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """`p`'s arguments, with section.field=value overrides allowed anywhere among the flags: argparse
    fills the positional `overrides` once, and would refuse the ones that follow a flag."""
    args, rest = p.parse_known_args(argv)
    unknown = [arg for arg in rest if arg.startswith("-") or "=" not in arg]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *rest]
    return args


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The command-line flags as config overrides (later overrides win, so explicit ones come last)."""
    flags = {
        "distributed.num_workers": args.num_workers,
        "distributed.min_workers": args.min_workers,
        "distributed.gpus_per_worker": args.gpus_per_worker,
        "distributed.zero_stage": args.zero_stage,
        "distributed.storage_path": args.storage_path,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.data is not None:
        overrides += ["data.source=shards", f"data.shards={args.data.resolve()}"]
    return overrides


def method_names(arg: str) -> list[str]:
    return [name.strip() for name in arg.split(",") if name.strip()]


def output_folder(name: str, storage_path: str | None = None) -> Path:
    """The default output folder of a command: <storage path, else runs>/<name>-<time>."""
    return Path(storage_path or "runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def tracking_uri(tracking: TrackingConfig) -> str | None:
    """The MLflow store a run logs to; None when tracking is off."""
    return resolve_tracking_uri(tracking.mlflow_uri) if tracking.enabled else None


def check_tracking_server(uri: str | None) -> None:
    """Refuse to start when `uri` is an MLflow server that does not answer: the runs would log nothing
    to it. (A server that goes away during training never stops it: allnc_dist/tracking.)"""
    if uri is None or not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered
    except OSError as err:
        raise TrackingServerError(
            f"tracking server {uri} does not answer ({getattr(err, 'reason', err)}): start it, point "
            "tracking.mlflow_uri (or $MLFLOW_TRACKING_URI) at a running one, or set tracking.enabled=false"
        ) from err


def job_configs(config: Path, args: argparse.Namespace, default_methods: str | None
                ) -> tuple[dict[str, RunConfig], Path]:
    """Every method's validated config and the job's output folder. Nothing is written yet."""
    raw = load_raw(config, [*flag_overrides(args), *args.overrides])
    methods = method_names(args.methods or default_methods or raw.get("method", {}).get("preset", "allnc"))
    configs = method_configs(raw, methods, streams_shards=not args.local)
    first = next(iter(configs.values()))
    return configs, args.out or output_folder(raw.get("name", "run"), first.distributed.storage_path)


def run_job(config: Path, args: argparse.Namespace, default_methods: str | None) -> int:
    configs, out = job_configs(config, args, default_methods)
    check_tracking_server(tracking_uri(next(iter(configs.values())).tracking))
    from .results_table import write_comparison  # noqa: PLC0415 (torch import, after the checks)

    if args.local:
        results = run_methods(configs, out)
    else:
        from .data.builtin_shards import resolve_shards  # noqa: PLC0415
        from .engine.ray_driver import fit_on_ray  # noqa: PLC0415

        results = run_methods(resolve_shards(configs, out), out, fit_on_ray)
    print(write_comparison(results, out))
    return 0


def job_main(config: Path, argv: list[str] | None = None, methods: str | None = None) -> int:
    args = parse_arguments(parser(__doc__.splitlines()[0]), argv)
    return report_errors(Path(sys.argv[0]).name, args.debug, run_job, args.config or config, args, methods)
