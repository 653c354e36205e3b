"""The `allnc` command line.

    allnc train   --config jobs/configs/digits_lt.yaml [--run-dir DIR] [--resume] [a.b=value ...]
    allnc compare --config jobs/configs/digits_lt.yaml --methods allnc,ce [--out DIR] [a.b=value ...]
    allnc check   --config FILE [a.b=value ...]     # validate and print the resolved config
    allnc shards  --out DIR [--dataset NAME | --list FILE | --imagefolder ROOT | --inat-json FILE] [...]
    allnc sweep   SWEEP_YAML [--config BASE] [--out DIR] [--resume] [--num-samples N] [a.b=value ...]

Every command takes --debug. An error ends a command with one line on stderr and an exit status by
kind (allnc_dist/errors.py): 2 config, 3 input data, 4 tracking server.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig, config_from_dict, deep_merge, load_config, load_raw, parse_overrides
from .errors import DataError, add_debug_flag, report_errors
from .launch import check_tracking_server, method_names, output_folder, parse_arguments, tracking_uri
from .method_runs import method_configs, run_methods
from .sweep.job import add_arguments as add_sweep_arguments
from .sweep.job import run_command as cmd_sweep


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allnc", description="Long-tailed training with All-around Neural Collapse.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run in this process (CPU or one GPU)")
    train.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    train.add_argument("--run-dir", type=Path, help="run directory (default: runs/<name>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    train.add_argument("overrides", nargs="*", help="config overrides, section.field=value")

    compare = sub.add_parser("compare", help="train several methods and print them side by side")
    compare.add_argument("--config", type=Path)
    compare.add_argument("--methods", default="allnc,ce", help="comma-separated method presets")
    compare.add_argument("--out", type=Path, help="output folder (default: runs/<name>-compare-<time>)")
    compare.add_argument("overrides", nargs="*")

    check = sub.add_parser("check", help="validate a config and print it resolved")
    check.add_argument("--config", type=Path)
    check.add_argument("overrides", nargs="*")

    shards = sub.add_parser("shards", help="write a dataset as long-tailed WebDataset shards (docs/shards.md)")
    shards.add_argument("--out", type=Path, required=True, help="output folder; each split goes to OUT/<split>/")
    source = shards.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=["digits_lt", "synthetic_lt", "cifar10_lt", "cifar100_lt"],
        help="a built-in dataset (default: data.name); writes train/ and test/ unless --split is given",
    )
    source.add_argument("--imagefolder", type=Path, help="ROOT/<class>/*.{jpg,jpeg,png}, copied byte for byte")
    source.add_argument("--list", type=Path, help="ImageNet-LT style list: '<path> <label>' per line")
    source.add_argument("--inat-json", type=Path, help="iNaturalist 2018 annotations (COCO-style JSON)")
    shards.add_argument("--image-root", type=Path, help="folder the paths of --list / --inat-json are relative to")
    shards.add_argument("--class-names", type=Path, help="with --list: one class name per line, line k names class k")
    shards.add_argument("--split", choices=["train", "val", "test"],
                        help="split to write (file sources: default train; built-in datasets have train and test)")
    shards.add_argument("--samples-per-shard", type=int, default=1000)
    shards.add_argument("--processes", type=int, default=1, help="writer processes")
    shards.add_argument("--seed", type=int, default=0, help="seed of the shuffle across shards (data.seed selects)")
    shards.add_argument("--no-progress", action="store_true", help="no progress bar")
    shards.add_argument("overrides", nargs="*", help="data config overrides for built-in datasets, data.field=value")

    sweep = sub.add_parser("sweep", help="tune a job config's hyperparameters on Ray Tune (docs/sweeps.md)")
    add_sweep_arguments(sweep)
    for command in (train, compare, check, shards, sweep):
        add_debug_flag(command)
    return parser


def resolve_resume_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """A resumed run keeps the config it was started with; overrides given now apply on top."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume: {run_dir} holds no config.yaml; is it a run directory?")
    return config_from_dict(deep_merge(yaml.safe_load(saved.read_text()), parse_overrides(overrides)))


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.run_dir is None:
            raise ConfigError("--resume needs --run-dir, the run to continue")
        cfg = resolve_resume_config(args.run_dir, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    check_tracking_server(tracking_uri(cfg.tracking))
    from .engine.trainer import train_locally  # noqa: PLC0415 (torch import after the config is known good)
    from .results_table import results_table  # noqa: PLC0415

    run_dir = args.run_dir or output_folder(cfg.name)
    result = train_locally(cfg, run_dir, resume=args.resume)
    print(results_table({cfg.method.preset: result.report}))
    print(f"run directory: {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    raw = load_raw(args.config, args.overrides)
    configs = method_configs(raw, method_names(args.methods))
    check_tracking_server(tracking_uri(next(iter(configs.values())).tracking))
    from .results_table import write_comparison  # noqa: PLC0415 (torch import after the configs are known good)

    out = args.out or output_folder(f"{raw.get('name', 'run')}-compare")
    print(write_comparison(run_methods(configs, out), out))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def shard_sources(args: argparse.Namespace) -> dict:
    """What `allnc shards` writes, by split: the files named (--imagefolder, --list, --inat-json) or a
    built-in dataset's splits."""
    from .shards import builtin_sources, file_source  # noqa: PLC0415 (torch import)

    if args.imagefolder or args.list or args.inat_json:
        if args.overrides:
            raise ConfigError("section.field=value overrides apply to built-in datasets (--dataset) only")
        if args.image_root is None and not args.imagefolder:
            raise ConfigError("--list and --inat-json need --image-root, the folder their image paths are relative to")
        try:  # what the files hold (a bad line, a missing image) is input data, not the command line
            return {args.split or "train": file_source(args.imagefolder, args.list, args.inat_json, args.image_root,
                                                       args.class_names)}
        except ValueError as err:
            raise DataError(str(err)) from err
    dataset = [f"data.name={args.dataset}"] if args.dataset else []
    try:
        splits = builtin_sources(load_config(None, args.overrides + dataset).data)
    except ValueError as err:  # a data config the writer cannot encode
        raise ConfigError(str(err)) from err
    if args.split and args.split not in splits:
        raise ConfigError(f"built-in datasets have the splits {sorted(splits)}, not {args.split!r}")
    return {args.split: splits[args.split]} if args.split else splits


def cmd_shards(args: argparse.Namespace) -> int:
    """Write the chosen source's split(s) under --out; print one summary line per split."""
    from .shards import write_shards  # noqa: PLC0415 (torch import)

    if args.samples_per_shard < 1 or args.processes < 1:
        raise ConfigError(
            f"--samples-per-shard and --processes must be >= 1, got {args.samples_per_shard}, {args.processes}"
        )
    for split, source in shard_sources(args).items():
        start = time.perf_counter()
        index = write_shards(
            source, args.out, split, args.samples_per_shard, args.seed, args.processes, progress=not args.no_progress
        )
        print(
            f"{args.out / split}: {len(index['shards'])} shards, {index['total_samples']} samples, "
            f"{index['num_classes']} classes, {time.perf_counter() - start:.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(_parser(), argv)
    commands = {"train": cmd_train, "compare": cmd_compare, "check": cmd_check, "shards": cmd_shards,
                "sweep": cmd_sweep}
    return report_errors("allnc", args.debug, commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
