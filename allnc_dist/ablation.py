"""The ablation job: the method presets, and AllNC's paper form with each of its three parts switched
off or one of the study's options on, every one trained with several seeds on one dataset and config;
a table of mean ± std over the seeds.

    python jobs/ablation.py [--config YAML] [--local] [--seeds N | --seed-list 0,1,2] [--variants ce,allnc]
                            [--data SHARDS] [--num-workers N] [--gpus-per-worker G] [--zero-stage S]
                            [--storage-path PATH] [--out DIR] [--debug] [section.field=value ...]

Seeds: run k of a variant trains with train.seed = k, which sets the initialisation, the batch order
and the augmentation. data.seed stays as configured, so every run sees the same long-tailed split
and test set: the spread over seeds is training noise, not a different dataset.

Engine: Ray Train workers, as the other jobs (allnc_dist/launch.py); `--local` trains in this process.
Runs go to <out>/<variant>/seed<k>/. A run whose report.json exists is reused, not trained again,
and a run stopped after a checkpoint resumes from it: rerunning with the same --out continues an
interrupted ablation. A run found there must have the config asked for now.

Writes <out>/ablation.md (the table), <out>/ablation.json (every run's metrics and the aggregates)
and the cosine heatmaps of each variant's first seed. MLflow: a parent run `ablation-<config name>`
(reopened by a rerun) holds every training run as a child, the table, the JSON and the heatmaps as
artifacts, and `<variant>/<metric>_mean` / `_std` as metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import yaml

from .config import ConfigError, RunConfig, config_from_dict, deep_merge, load_raw
from .data.builtin_shards import resolve_shards
from .engine.trainer import TrainResult, train_locally
from .errors import report_errors
from .launch import check_tracking_server, flag_overrides, output_folder, parse_arguments, parser, tracking_uri
from .method_runs import Train, shared_data
from .results_table import TABLE_COLUMNS, TABLE_NOTE, metrics_table, plot_geometry
from .tracking import MlflowTracker, RunDirectory, flatten_config

# Every variant the job knows, in table order: a name and the config overrides that make it. The
# presets fill in their own method fields: `allnc` is AllNC's default (the sweep's choice) and
# `allnc_paper` METHOD.md's form of it, every part on. The ablations and the study's options each
# change one thing of the paper form, which has all the parts to switch off.
PAPER = {"preset": "allnc_paper"}
VARIANTS: dict[str, dict] = {
    **{preset: {"method": {"preset": preset}}
       for preset in ("ce", "la", "ldam_drw", "bbn", "etf_dr", "allnc", "allnc_paper")},
    "allnc_no_hycon": {"method": {**PAPER, "hycon": {"weight": 0.0}}},
    "allnc_no_p2p": {"method": {**PAPER, "p2p": {"weight": 0.0}}},
    "allnc_no_gbbn": {"method": {**PAPER, "gbbn": {"enabled": False}}},
    # The study of issue 13's options, one change from the paper form each (docs/RESULTS.md).
    "allnc_aux_alpha": {"method": {**PAPER, "aux": {"branch_weights": "alpha"}}},
    "allnc_sqrt_sampler": {"method": {**PAPER, "gbbn": {"rebalance": "tempered", "sampler_q": 0.5}}},
    "allnc_la_by_loss": {"method": {**PAPER, "loss": "la", "gbbn": {"rebalance": "logit_adjust"}}},
    "allnc_light": {"method": {**PAPER, "gbbn": {"rebalance": "logit_adjust", "shared_stage": True}}},
    # ... and the other allowed pairings of the loss and the re-balancing branch (one prior correction each).
    "allnc_balanced_sampler": {"method": {**PAPER, "gbbn": {"rebalance": "class_balanced"}}},
    "allnc_ce_la_by_loss": {"method": {**PAPER, "gbbn": {"rebalance": "logit_adjust"}}},
    "allnc_reweight": {"method": {**PAPER, "gbbn": {"rebalance": "reweight"}}},
    "allnc_la_reweight": {"method": {**PAPER, "loss": "la", "gbbn": {"rebalance": "reweight"}}},
    # The two options that helped most on digits-LT, together.
    "allnc_la_alpha": {"method": {**PAPER, "loss": "la", "gbbn": {"rebalance": "logit_adjust"},
                                  "aux": {"branch_weights": "alpha"}}},
}

# Config fields that do not change what a run computes: a reused run may differ in these.
BOOKKEEPING_FIELDS = ("tracking.", "distributed.storage_path")

RunKey = tuple[str, int]  # (variant, seed)


# ---------------------------------------------------------------------------------- command line
def ablation_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="train each variant with train.seed = 0..N-1 (default 3)")
    p.add_argument("--seed-list", help="comma-separated train.seed values instead of --seeds, e.g. 0,1,2")
    p.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all)")
    return p


def selected_variants(arg: str | None) -> list[str]:
    """The variants named by --variants, in table order; all of them without the flag."""
    if arg is None:
        return list(VARIANTS)
    names = {name.strip() for name in arg.split(",") if name.strip()}
    unknown = sorted(names - VARIANTS.keys())
    if unknown or not names:
        raise ConfigError(f"--variants {arg!r}: unknown or empty; choose from {', '.join(VARIANTS)}")
    return [name for name in VARIANTS if name in names]


def selected_seeds(count: int, seed_list: str | None) -> list[int]:
    if seed_list is None:
        if count < 1:
            raise ConfigError(f"--seeds must be at least 1, got {count}")
        return list(range(count))
    try:
        seeds = [int(s) for s in seed_list.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seed-list must be comma-separated integers, got {seed_list!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seed-list must name distinct seeds, got {seed_list!r}")
    return seeds


# ---------------------------------------------------------------------------------------- configs
def ablation_configs(raw: dict, variants: Sequence[str], seeds: Sequence[int], streams_shards: bool = False
                     ) -> dict[RunKey, RunConfig]:
    """One validated config per (variant, seed): the config `raw`, before validation, with the variant's
    overrides and the seed merged in. Any bad config fails here, before the first run starts.
    `streams_shards`: the job writes a built-in dataset as shards first (config_from_dict)."""
    return {
        (variant, seed): config_from_dict(
            deep_merge(raw, deep_merge(VARIANTS[variant], {"name": f"{variant}-seed{seed}", "train": {"seed": seed}})),
            streams_shards,
        )
        for variant in variants
        for seed in seeds
    }


def run_folder(out: Path, key: RunKey) -> Path:
    variant, seed = key
    return out / variant / f"seed{seed}"


def check_existing_run(cfg: RunConfig, folder: Path, local: bool) -> None:
    """A run already in `folder` is reused or resumed, so it must have been started with `cfg`."""
    run_dir = RunDirectory(folder)
    if not run_dir.config_path.exists():
        return
    saved = flatten_config(yaml.safe_load(run_dir.config_path.read_text()))
    wanted = flatten_config(cfg.model_dump(mode="json"))
    differ = sorted(k for k in saved.keys() | wanted.keys()
                    if saved.get(k) != wanted.get(k) and not k.startswith(BOOKKEEPING_FIELDS))
    if differ:
        raise ConfigError(f"{folder} holds a run with another config (differs in {', '.join(differ)}): "
                          "pass another --out, or the same config")
    # The local engine resumes from a checkpoint only; the Ray engine restarts such a run by itself.
    if local and not run_dir.report_path.exists() and not run_dir.checkpoint_path.exists():
        raise ConfigError(f"{folder} holds a run stopped before its first checkpoint: delete that folder to train "
                          "it again")


# ----------------------------------------------------------------------------------------- engines
def local_engine(first: RunConfig, parent_run_id: str | None) -> Train:
    """Train in this process, every run on one in-memory dataset; resume a run that has a checkpoint."""
    data = shared_data(first)

    def train(cfg: RunConfig, folder: Path) -> TrainResult:
        resume = RunDirectory(folder).checkpoint_path.exists()
        return train_locally(cfg, folder, data=data, parent_run_id=parent_run_id, resume=resume)

    return train


def ray_engine(parent_run_id: str | None) -> Train:
    """Train on Ray Train workers; fitting a run directory again resumes from its latest checkpoint."""
    from .engine.ray_driver import fit_on_ray  # noqa: PLC0415

    return lambda cfg, folder: fit_on_ray(cfg, folder, parent_run_id=parent_run_id)


# ---------------------------------------------------------------------------------------- results
def summary(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; None from a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def aggregate(runs: dict[int, dict[str, float]]) -> dict[str, dict]:
    """Each metric's summary over the seeds of one variant (NaN where a run lacks the metric)."""
    keys = sorted({key for metrics in runs.values() for key in metrics})
    return {key: summary([metrics.get(key, math.nan) for metrics in runs.values()]) for key in keys}


def mean_std_cell(stats: dict | None, fmt: str) -> str:
    if stats is None:
        return "nan"
    if stats["std"] is None:
        return format(stats["mean"], fmt)
    return f"{format(stats['mean'], fmt)} ± {format(stats['std'], fmt)}"


def ablation_table(aggregates: dict[str, dict[str, dict]], fmt: str = "github") -> str:
    cells = {variant: [mean_std_cell(stats.get(key), f) for _, key, f in TABLE_COLUMNS]
             for variant, stats in aggregates.items()}
    return metrics_table(cells, fmt, label="variant")


def setup_line(first: RunConfig, seeds: Sequence[int]) -> str:
    spread = "mean ± sample std (ddof=1)" if len(seeds) > 1 else "a single run, no std"
    return (f"{len(seeds)} seed(s) per variant (train.seed {', '.join(map(str, seeds))}; the data split is fixed, "
            f"data.seed={first.data.seed}): {spread}. Dataset {first.data.name}, train.epochs={first.train.epochs}.")


def seed_metrics(results: dict[RunKey, TrainResult]) -> dict[str, dict[int, dict[str, float]]]:
    """The final metrics of every run, by variant (in table order) and seed."""
    metrics: dict[str, dict[int, dict[str, float]]] = {}
    for (variant, seed), result in results.items():
        metrics.setdefault(variant, {})[seed] = result.report["metrics"]
    return metrics


def write_outputs(out: Path, text: str, metrics: dict, aggregates: dict, first: RunConfig) -> list[Path]:
    """ablation.md (the table and its notes) and ablation.json (every run's metrics, the aggregates)."""
    (out / "ablation.md").write_text(text)
    record = {
        "dataset": first.data.name, "epochs": first.train.epochs, "data_seed": first.data.seed,
        "runs": {variant: {str(seed): {"run_dir": str(run_folder(out, (variant, seed))), "metrics": m}
                           for seed, m in by_seed.items()} for variant, by_seed in metrics.items()},
        "aggregates": aggregates,
    }
    (out / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    return [out / "ablation.md", out / "ablation.json"]


def plot_first_seeds(results: dict[RunKey, TrainResult], seeds: Sequence[int], out: Path) -> list[Path]:
    """The cosine heatmaps of each variant's first seed, one panel per variant."""
    first_seed = {variant: result for (variant, seed), result in results.items() if seed == seeds[0]}
    class_counts = next(iter(first_seed.values())).report["class_counts"]
    return plot_geometry(first_seed, class_counts, out)


# ------------------------------------------------------------------------------------------ MLflow
def open_parent_run(first: RunConfig, name: str, out: Path, params: dict) -> MlflowTracker | None:
    """The ablation's MLflow run, which every training run nests under; a rerun reopens it (its id
    is kept in <out>/mlflow_run_id). None when tracking is off."""
    uri = tracking_uri(first.tracking)
    if uri is None:
        return None
    folder = RunDirectory(out)
    run_id = folder.read_mlflow_run_id()
    tracker = MlflowTracker(uri, first.tracking.experiment, f"ablation-{name}", out, run_id=run_id)
    tracker.start()
    if run_id is None and tracker.run_id is not None:
        folder.record_mlflow_run_id(tracker.run_id)
        tracker.log_params(params)
    return tracker


def log_to_parent(tracker: MlflowTracker, aggregates: dict, files: list[Path]) -> None:
    tracker.log_metrics({f"{variant}/{key}_{part}": stats[part] for variant, by_key in aggregates.items()
                         for key, stats in by_key.items() for part in ("mean", "std")}, step=0)
    for path in files:
        tracker.log_artifact(path, "plots" if path.suffix == ".png" else None)


# ---------------------------------------------------------------------------------------- the job
def plan_ablation(config: Path, args: argparse.Namespace) -> tuple[dict[RunKey, RunConfig], list[int], Path, str]:
    """Every run's validated config, the seeds, the output folder and the config's name. Nothing runs
    before all of it checks out, except writing a built-in dataset as shards for the Ray engine."""
    if args.methods:
        raise ConfigError("--methods: the ablation selects its runs with --variants")
    raw = load_raw(config, [*flag_overrides(args), *args.overrides])
    seeds = selected_seeds(args.seeds, args.seed_list)
    configs = ablation_configs(raw, selected_variants(args.variants), seeds, streams_shards=not args.local)
    first = next(iter(configs.values()))
    check_tracking_server(tracking_uri(first.tracking))
    name = raw.get("name", "run")
    out = args.out or output_folder(f"ablation-{name}", first.distributed.storage_path)
    if not args.local:
        configs = resolve_shards(configs, out)
    for key, cfg in configs.items():
        check_existing_run(cfg, run_folder(out, key), args.local)
    return configs, seeds, out, name


def train_or_reuse(configs: dict[RunKey, RunConfig], out: Path, reused: list[RunKey], train: Train
                   ) -> dict[RunKey, TrainResult]:
    results = {}
    for i, (key, cfg) in enumerate(configs.items(), start=1):
        folder = run_folder(out, key)
        print(f"[{i}/{len(configs)}] {key[0]} seed {key[1]}: {'reused' if key in reused else 'training'} ({folder})",
              flush=True)
        results[key] = TrainResult.load(folder) if key in reused else train(cfg, folder)
    return results


def write_results(results: dict[RunKey, TrainResult], first: RunConfig, seeds: list[int], out: Path
                  ) -> tuple[str, dict, list[Path]]:
    """The table text, the aggregates, and the files written: ablation.md, ablation.json, the heatmaps."""
    metrics = seed_metrics(results)
    aggregates = {variant: aggregate(by_seed) for variant, by_seed in metrics.items()}
    text = f"{ablation_table(aggregates)}\n\n{setup_line(first, seeds)}\n\n{TABLE_NOTE}\n"
    files = [*write_outputs(out, text, metrics, aggregates, first), *plot_first_seeds(results, seeds, out)]
    return text, aggregates, files


def run_ablation(config: Path, args: argparse.Namespace) -> str:
    """Validate every config, train (or reuse) every run, write and log the results; returns the printout."""
    configs, seeds, out, name = plan_ablation(config, args)
    first = next(iter(configs.values()))
    reused = [key for key in configs if RunDirectory(run_folder(out, key)).report_path.exists()]
    out.mkdir(parents=True, exist_ok=True)
    params = {"variants": ",".join(dict.fromkeys(v for v, _ in configs)), "seeds": ",".join(map(str, seeds)),
              "config": str(config), "engine": "local" if args.local else "ray"}
    parent = open_parent_run(first, name, out, params)
    parent_run_id = parent.run_id if parent is not None else None
    status = "FAILED"
    try:
        train = local_engine(first, parent_run_id) if args.local else ray_engine(parent_run_id)
        text, aggregates, files = write_results(train_or_reuse(configs, out, reused, train), first, seeds, out)
        if parent is not None:
            log_to_parent(parent, aggregates, files)
        status = "FINISHED"
    finally:
        if parent is not None:
            parent.finish(status)
    trained = len(configs) - len(reused)
    return f"{text}\n{trained} run(s) trained, {len(reused)} reused (report.json present). Results: {out}"


def print_ablation(config: Path, args: argparse.Namespace) -> int:
    print(run_ablation(config, args))
    return 0


def main(default_config: Path, argv: list[str] | None = None) -> int:
    args = parse_arguments(ablation_parser(), argv)
    return report_errors(Path(sys.argv[0]).name, args.debug, print_ablation, args.config or default_config, args)
