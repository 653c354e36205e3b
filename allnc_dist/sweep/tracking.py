"""The sweep's MLflow side: one store that concurrent trials can share, the parent run every trial
nests under, and what the parent run records once the sweep is done."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import TrackingServerError
from ..tracking import MlflowServer, MlflowTracker, RunDirectory, flatten_config
from ..tracking.run_tracking import SQLITE_PREFIX
from .spec import FEW, OVERALL, SweepConfig

if TYPE_CHECKING:
    from .results import TrialOutcome


@contextlib.contextmanager
def shared_store(uri: str, server_root: Path) -> Iterator[str]:
    """A URI every trial may log to at once. One SQLite file takes one writer, so a `sqlite:///` store
    is served by a private `mlflow server` on loopback for the sweep's duration; any other URI (an
    http(s) server) is shared as it is."""
    if not uri.startswith(SQLITE_PREFIX):
        yield uri
        return
    try:
        server = MlflowServer(server_root, db=uri[len(SQLITE_PREFIX):])
    except RuntimeError as err:  # its message holds the log's tail: name the log instead
        raise TrackingServerError(f"the sweep's mlflow server over {uri} did not start: see "
                                  f"{server_root / 'server.log'}") from err
    with server:
        yield server.url


def open_parent_run(url: str, experiment: str, spec: SweepConfig, sweep_dir: Path, run_id: str | None) -> MlflowTracker:
    """The sweep's run (named after the sweep), reopened when `run_id` is given; a new one gets the
    sweep's settings as params."""
    tracker = MlflowTracker(url, experiment, spec.name, sweep_dir, run_id=run_id)
    tracker.start()
    if run_id is None:
        settings = spec.model_dump(mode="json", exclude={"space"})
        tracker.log_params({**flatten_config(settings, "sweep."), "sweep.space": json.dumps(
            {path: d.model_dump(exclude_none=True) for path, d in spec.space.items()})})
    return tracker


def log_outcome(parent: MlflowTracker, outcomes: list[TrialOutcome], spec: SweepConfig, files: list[Path]) -> None:
    """The best trial's values as params and its accuracies as metrics, and the summary files."""
    if outcomes:
        best = outcomes[0]
        parent.log_params({"best.trial": best.trial_id, **{f"best.{p}": v for p, v in best.knobs.items()}})
        parent.log_metrics({f"best/{key}": best.value(key) for key in dict.fromkeys((spec.metric, OVERALL, FEW))}
                           | {"best/epoch": best.epochs_run}, step=0)
    for path in files:
        parent.log_artifact(path)


def close_unfinished_trial_runs(url: str, outcomes: list[TrialOutcome], trials_dir: Path) -> None:
    """Mark the MLflow runs of trials that never ended them: a trial stopped by the scheduler (or one
    that failed) is killed mid-run, so its own run stays RUNNING otherwise. A trial that ended its run
    keeps its status; one killed after writing its report but before ending its run is KILLED too (a
    stopped trial's workers may run on for a moment)."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(url)
    for outcome in outcomes:
        run_id = RunDirectory(trials_dir / outcome.trial_id).read_mlflow_run_id()
        if run_id is not None and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED" if outcome.errored else "KILLED")
