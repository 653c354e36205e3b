"""The job entry points' shared command line (`jobs/*.py`): one or more methods trained on Ray Train
workers (the default) or in this process (`--local`), then the results table and the heatmaps.

    python jobs/<job>.py [--config YAML] [--local] [--data SHARDS] [--num-workers N] [--gpus-per-worker G]
                         [--zero-stage S] [--storage-path PATH] [--methods allnc,ce] [--out DIR]
                         [section.field=value ...]

The Ray engine streams shards. Without `--data`, a built-in dataset (digits-LT, synthetic-LT,
CIFAR-LT with data.root) is first written as shards under `<out>/shards`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ConfigError, load_raw
from .compare import method_configs

BUILT_IN = ("digits_lt", "synthetic_lt", "cifar10_lt", "cifar100_lt")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", type=Path, help="YAML config (default: the job's own, in jobs/configs/)")
    p.add_argument("--local", action="store_true", help="train in this process (one GPU or the CPU), no Ray")
    p.add_argument("--data", type=Path, help="shard folder written by `allnc shards` (holds train/ and test/)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (distributed.num_workers)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker; 0 trains on CPUs with gloo")
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage")
    p.add_argument("--storage-path", help="Ray Train storage for checkpoints (shared storage for multi-node)")
    p.add_argument("--methods", help="comma-separated method presets (default: the config's)")
    p.add_argument("--out", type=Path, help="output folder (default: <storage path or runs>/<name>-<time>)")
    p.add_argument("overrides", nargs="*", help="config overrides, section.field=value")
    return p


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The command-line flags as config overrides (later overrides win, so explicit ones come last)."""
    flags = {
        "distributed.num_workers": args.num_workers,
        "distributed.gpus_per_worker": args.gpus_per_worker,
        "distributed.zero_stage": args.zero_stage,
        "distributed.storage_path": args.storage_path,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.data is not None:
        overrides += ["data.source=shards", f"data.shards={args.data.resolve()}"]
    return overrides


def write_builtin_shards(base: dict, out: Path) -> Path:
    """Write the config's built-in dataset as shards under `out/shards` (resuming a partial write)."""
    from .config import config_from_dict  # noqa: PLC0415
    from .shards import builtin_sources, write_shards  # noqa: PLC0415

    data_cfg = config_from_dict(base).data
    if data_cfg.name not in BUILT_IN:
        raise ConfigError(f"data.name={data_cfg.name!r} has no built-in source: pass --data, a shard folder")
    folder = out / "shards"
    for split, source in builtin_sources(data_cfg).items():
        write_shards(source, folder, split, 1000, seed=data_cfg.seed, progress=False)
    return folder


def job_main(config: Path, argv: list[str] | None = None, methods: str | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        return run_job(args.config or config, args, methods)
    except (ConfigError, FileExistsError) as err:
        print(f"{Path(sys.argv[0]).name}: {err}", file=sys.stderr)
        return 2


def run_job(config: Path, args: argparse.Namespace, default_methods: str | None) -> int:
    from .compare import run_methods, write_comparison  # noqa: PLC0415

    base = load_raw(config, [*flag_overrides(args), *args.overrides])
    names = (args.methods or default_methods or base.get("method", {}).get("preset", "allnc")).split(",")
    methods = [m.strip() for m in names if m.strip()]
    configs = method_configs(base, methods)  # every config fails here, before any work, if it is bad
    first = next(iter(configs.values()))
    root = Path(first.distributed.storage_path or "runs")
    out = args.out or root / f"{base.get('name', 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"
    train = None
    if not args.local:
        if first.data.source != "shards":
            shards = write_builtin_shards(base, out)
            base = load_raw(config, [*flag_overrides(args), *args.overrides, "data.source=shards",
                                     f"data.shards={shards.resolve()}"])
        from .engine.ray_train import fit_on_ray  # noqa: PLC0415

        train = fit_on_ray
    print(write_comparison(run_methods(base, methods, out, train), out))
    return 0
