"""The sweep job: validate the sweep file and every knob, prepare the data and the MLflow store, run the
trials on Ray Tune, then write and log the summary. `--resume` continues an interrupted sweep.

    allnc sweep SWEEP_YAML [--config BASE] [--out DIR] [--num-samples N] [section.field=value ...]
    allnc sweep [SWEEP_YAML] --resume --out DIR

A sweep's folder holds sweep.json (its settings, the resolved base config and the MLflow parent run),
shards/ (a built-in dataset, written once), trials/<trial id>/ (each trial's run directory), tune/
(Tune's state), summary.md, best.json (the best trial's knobs as overrides) and sweep_params.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import ConfigError, RunConfig, config_from_dict, deep_merge
from ..errors import add_debug_flag, report_errors
from ..launch import check_tracking_server, parse_arguments, tracking_uri
from ..tracking import MlflowTracker
from .spec import SweepConfig, check_space, load_sweep, sweep_base
from .tracking import close_unfinished_trial_runs, log_outcome, open_parent_run, shared_store

STATE_FILE = "sweep.json"
SUMMARY_FILE = "summary.md"
BEST_FILE = "best.json"
PLOT_FILE = "sweep_params.png"


def add_arguments(p: argparse.ArgumentParser, default_sweep: Path | None = None) -> None:
    default = f" (default: {default_sweep})" if default_sweep else ""
    p.add_argument("sweep", nargs="?", type=Path, metavar="SWEEP_YAML", help=f"sweep file{default}")
    p.add_argument("--config", type=Path, help="base job config, instead of the sweep file's `base`")
    p.add_argument("--out", type=Path, help="sweep folder (default: runs/sweep-<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out with its recorded settings")
    p.add_argument("--num-samples", type=int, help="trials to draw, instead of the sweep file's num_samples")
    p.add_argument("overrides", nargs="*", help="base config overrides, section.field=value")


@dataclass
class SweepState:
    """What sweep.json records: enough to resume the sweep and reuse its MLflow parent run."""

    sweep: dict  # the SweepConfig
    base_config: dict  # the raw config every trial starts from, data and evaluation split resolved
    tracking_uri: str | None  # None: tracking off
    parent_run_id: str | None = None
    finished: bool = False

    @property
    def spec(self) -> SweepConfig:
        return SweepConfig.model_validate(self.sweep)

    def save(self, sweep_dir: Path) -> None:
        (sweep_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepState:
        path = sweep_dir / STATE_FILE
        if not path.is_file():
            raise ConfigError(f"--resume: {sweep_dir} holds no {STATE_FILE}; is it a sweep folder?")
        return cls(**json.loads(path.read_text()))


def run_command(args: argparse.Namespace, default_sweep: Path | None = None) -> int:
    if args.sweep is not None and "=" in args.sweep.name:
        # argparse gives the optional SWEEP_YAML the first override when no sweep file is named.
        args.overrides, args.sweep = [str(args.sweep), *args.overrides], None
    if args.resume:
        return resume_sweep(args)
    sweep_file = args.sweep or default_sweep
    if sweep_file is None:
        raise ConfigError("give a sweep file (SWEEP_YAML), or --resume --out DIR")
    return start_sweep(load_sweep(sweep_file, args.config, args.num_samples), args.out, args.overrides)


def start_sweep(spec: SweepConfig, out: Path | None, overrides: list[str]) -> int:
    """Check everything, then prepare the sweep folder and run it."""
    base_raw = sweep_base(spec, overrides)
    base = check_space(spec, base_raw)
    out = out or Path("runs") / f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / STATE_FILE).exists():
        raise ConfigError(f"{out} already holds a sweep: continue it with --resume --out {out}, "
                          "or choose another --out")
    uri = tracking_uri(base.tracking)
    check_tracking_server(uri)
    state = SweepState(spec.model_dump(mode="json"), trial_data(base_raw, base, out), uri)
    out.mkdir(parents=True, exist_ok=True)
    return run_sweep(state, out.resolve())


def resume_sweep(args: argparse.Namespace) -> int:
    """Continue the sweep in --out as recorded; a finished one only shows its summary again."""
    if args.out is None:
        raise ConfigError("--resume needs --out, the sweep's folder")
    if args.config or args.num_samples is not None or args.overrides:
        raise ConfigError("--resume continues the sweep with its recorded settings (sweep.json): "
                          "drop --config, --num-samples and the overrides")
    state = SweepState.load(args.out)
    if args.sweep is not None and load_sweep(args.sweep) != state.spec:
        raise ConfigError(f"--resume: {args.sweep} differs from the settings {args.out} was started with "
                          f"({args.out / STATE_FILE}); resume without the sweep file, or start a new sweep")
    if state.finished:
        print((args.out / SUMMARY_FILE).read_text(), end="")
        print(f"sweep folder: {args.out} (finished; nothing to resume)")
        return 0
    check_tracking_server(state.tracking_uri)
    return run_sweep(state, args.out.resolve())


def trial_data(base_raw: dict, base: RunConfig, out: Path) -> dict:
    """The raw base config (knobs and presets merge into it) with the data every trial reads: shards
    (Ray Train streams them) with a val/ split. Local paths become absolute: each Tune trial runs in a
    working directory of its own."""
    from ..data.builtin_shards import resolve_shards  # noqa: PLC0415 (torch import, after validation)
    from ..engine.streams import val_split_dir  # noqa: PLC0415

    data = resolve_shards({"base": base}, out)["base"].data
    try:
        val_split_dir(Path(data.shards))
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    resolved = {"data": data.model_dump(mode="json")}
    storage = base.distributed.storage_path
    if storage and "://" not in storage:
        resolved["distributed"] = {"storage_path": str(Path(storage).resolve())}
    return deep_merge(base_raw, resolved)


def run_sweep(state: SweepState, sweep_dir: Path) -> int:
    """Run (or continue) the trials with the MLflow store shared, then summarise; sweep.json records
    the parent run before any trial starts, and `finished` once the summary is written."""
    spec, base = state.spec, config_from_dict(state.base_config)
    store = shared_store(state.tracking_uri, sweep_dir / "mlflow") if state.tracking_uri else contextlib.nullcontext()
    with store as url:
        parent = None
        if url is not None:
            parent = open_parent_run(url, base.tracking.experiment, spec, sweep_dir, state.parent_run_id)
            state.parent_run_id = parent.run_id
        state.save(sweep_dir)
        status = "FAILED"
        try:
            text, failed = run_trials(state, spec, base, sweep_dir, url, parent)
            status = "KILLED" if text is None else "FAILED" if failed else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if parent is not None:
                parent.finish(status)
    if text is None:
        print(f"sweep interrupted: continue it with --resume --out {sweep_dir}", file=sys.stderr)
        return 130
    state.finished = True
    state.save(sweep_dir)
    print(text, end="")
    print(f"sweep folder: {sweep_dir}")
    if failed:
        print(f"sweep failed: every trial ended in an error (their logs: {sweep_dir / 'trials'})", file=sys.stderr)
        return 1
    return 0


def run_trials(state: SweepState, spec: SweepConfig, base: RunConfig, sweep_dir: Path, url: str | None,
               parent: MlflowTracker | None) -> tuple[str | None, bool]:
    """The Tune run, then summary.md, sweep_params.png and the parent run's records; the summary's
    text (None when the run was interrupted) and whether every trial failed."""
    # Ray, torch and matplotlib load once the sweep has checked out.
    from .results import best_trial, plot_parameters, summary, trial_outcomes  # noqa: PLC0415
    from ..engine.ray_driver import alive_node_addresses  # noqa: PLC0415
    from .tune_run import TrialSetup, check_trials_reach_every_node, interrupted, reserve_cluster, run_tune  # noqa: PLC0415

    trial_base = deep_merge(state.base_config, {"tracking": {"mlflow_uri": url}}) if url else state.base_config
    setup = TrialSetup(trial_base, str(sweep_dir), state.parent_run_id)
    concurrency = reserve_cluster(spec, base.distributed)
    check_trials_reach_every_node(config_from_dict(trial_base), state.tracking_uri, alive_node_addresses())
    results = run_tune(spec, setup, base.train.epochs, concurrency)
    if interrupted(sweep_dir, spec):
        return None, False
    outcomes = trial_outcomes(results, spec, base.train.epochs)
    text = summary(outcomes, spec)
    (sweep_dir / SUMMARY_FILE).write_text(text)
    (sweep_dir / BEST_FILE).write_text(json.dumps(best_trial(outcomes, spec), indent=2) + "\n")
    plot_parameters(outcomes, spec, sweep_dir / PLOT_FILE)
    if parent is not None:
        close_unfinished_trial_runs(url, outcomes, sweep_dir / "trials")
        log_outcome(parent, outcomes, spec, [sweep_dir / SUMMARY_FILE, sweep_dir / PLOT_FILE])
    return text, bool(outcomes) and all(o.errored for o in outcomes)


def main(default_sweep: Path | None = None, argv: list[str] | None = None) -> int:
    """`jobs/sweep.py`: the `allnc sweep` command with a default sweep file."""
    p = argparse.ArgumentParser(description="A hyperparameter sweep on Ray Tune (docs/sweeps.md).")
    add_arguments(p, default_sweep)
    add_debug_flag(p)
    args = parse_arguments(p, argv)
    return report_errors(Path(sys.argv[0]).name, args.debug, run_command, args, default_sweep)
