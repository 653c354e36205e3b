"""Ray Tune in the Train V2 pattern: each trial is a Tune *function* that fits one Ray Train run
(`fit_on_ray`) and forwards rank 0's reports (`epoch`, `step`, `eval/...`) to Tune through
`TuneReportCallback`. (`Tuner(TorchTrainer)` fails under Train V2.)

Trial resources: the function, which drives its Train run, holds 1 CPU; the Train workers reserve
their own (`distributed.cpus_per_worker`, `distributed.gpus_per_worker`) when the run starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.result_grid import ResultGrid
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm

from ..config import ConfigError, DistributedConfig, RunConfig, config_from_dict
from ..engine.ray_driver import check_multi_node_storage, ensure_ray, fit_on_ray
from ..tracking.run_tracking import SQLITE_PREFIX
from .spec import AshaScheduler, SweepConfig, with_knobs

TRIAL_DRIVER_CPUS = 1.0
# Resource ratios such as 3 / (1 + 0.2 x 10) land a hair under an integer in floating point.
RATIO_SLACK = 1e-9


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares; Tune passes it to each trial through the object store."""

    base_raw: dict  # the raw config trials start from (shards, val split, tracking URI already set)
    sweep_dir: str
    parent_run_id: str | None


def run_trial(knobs: dict, setup: TrialSetup) -> None:
    """One trial: the base config with Tune's sampled knob values, fitted by Ray Train. The run
    directory is named by the trial id, so that a resumed sweep resumes the same Ray Train run."""
    context = tune.get_context()
    cfg = config_from_dict(with_knobs(setup.base_raw, {**knobs, "name": context.get_trial_name()}))
    run_dir = Path(setup.sweep_dir) / "trials" / context.get_trial_id()
    fit_on_ray(cfg, run_dir, callbacks=[TuneReportCallback()], parent_run_id=setup.parent_run_id)


def trainable(setup: TrialSetup):
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": TRIAL_DRIVER_CPUS})


def trial_cpus(d: DistributedConfig) -> float:
    return TRIAL_DRIVER_CPUS + d.num_workers * d.cpus_per_worker


def default_max_concurrent_trials(resources: Mapping[str, float], d: DistributedConfig) -> int:
    """How many trials the resources hold at once (at least 1): by GPUs when the workers train on
    GPUs, else by CPUs, counting each trial's driver CPU."""
    if d.gpus_per_worker > 0:
        fits = resources.get("GPU", 0.0) / (d.num_workers * d.gpus_per_worker)
    else:
        fits = resources.get("CPU", 0.0) / trial_cpus(d)
    return max(1, math.floor(fits + RATIO_SLACK))


def reserve_cluster(spec: SweepConfig, d: DistributedConfig) -> int:
    """Start (or join) Ray with room for the sweep's concurrent trials; returns how many run at once."""
    import ray  # noqa: PLC0415

    if spec.max_concurrent_trials is not None:
        ensure_ray(spec.max_concurrent_trials * trial_cpus(d))
        return spec.max_concurrent_trials
    ensure_ray(trial_cpus(d))
    return default_max_concurrent_trials(ray.available_resources(), d)


def check_trials_reach_every_node(trial: RunConfig, store: str | None, nodes: list[str]) -> None:
    """On a cluster of several nodes, refuse the sweep before any trial starts when its trials could not
    share checkpoints or an MLflow store from every node (the sweep serves a SQLite store on 127.0.0.1)."""
    try:
        check_multi_node_storage(trial, nodes)
    except ConfigError as err:
        if store and store.startswith(SQLITE_PREFIX):
            raise ConfigError(f"{err}. The sweep serves {store} through an MLflow server on 127.0.0.1 only: set "
                              "MLFLOW_TRACKING_URI to a server on the cluster network (cluster/up.sh starts one)") from None
        raise


def search_space(spec: SweepConfig) -> dict:
    """Tune's param space: one flat key per knob, its field path."""
    ranges = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}
    sets = {"choice": tune.choice, "grid": tune.grid_search}
    return {path: ranges[d.kind](*d.values) if d.kind in ranges else sets[d.kind](list(d.values))
            for path, d in spec.space.items()}


def search_algorithm(spec: SweepConfig, concurrency: int) -> SearchAlgorithm:
    """The search, holding at most `concurrency` trials at once. (The limit goes here: Tune ignores
    TuneConfig.max_concurrent_trials for the basic variant generator.)"""
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch  # noqa: PLC0415

        return ConcurrencyLimiter(OptunaSearch(seed=spec.seed), max_concurrent=concurrency)
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=concurrency)


def scheduler(spec: SweepConfig, epochs: int) -> TrialScheduler:
    """ASHA counts time in the epochs the trials report; FIFO lets every trial finish."""
    s = spec.scheduler
    if isinstance(s, AshaScheduler):
        # A trial past ASHA's last rung ends by itself. That rung is max_t itself when max_t is
        # grace_period x reduction_factor^k, and a stop there comes after the trial's outputs: the
        # trainer reports its last epoch only once its evaluation, model and MLflow run are written.
        return ASHAScheduler(time_attr="epoch", max_t=s.max_t or epochs, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor, stop_last_trials=False)
    return FIFOScheduler()


def trial_dirname(trial: Trial) -> str:
    return trial.trial_id


def experiment_dir(sweep_dir: Path, spec: SweepConfig) -> Path:
    return sweep_dir / "tune" / spec.name


def run_tune(spec: SweepConfig, setup: TrialSetup, epochs: int, concurrency: int) -> ResultGrid:
    """Run the sweep's trials, or continue them where an interrupted sweep left its Tune state
    (errored trials run again; a trial's Ray Train run resumes from its latest checkpoint)."""
    sweep_dir = Path(setup.sweep_dir)
    path = experiment_dir(sweep_dir, spec)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(str(path), trainable(setup), resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable(setup),
            param_space=search_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                search_alg=search_algorithm(spec, concurrency), scheduler=scheduler(spec, epochs),
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(path.parent)),
        )
    return tuner.fit()


def interrupted(sweep_dir: Path, spec: SweepConfig) -> bool:
    """True when Tune returned before every trial ended (Ctrl+C). The results Tune returns then call
    the stopped trials terminated; its last saved state, written before it stopped them, does not."""
    trials = ExperimentAnalysis(str(experiment_dir(sweep_dir, spec))).trials
    return any(trial.status not in (Trial.TERMINATED, Trial.ERROR) for trial in trials)
