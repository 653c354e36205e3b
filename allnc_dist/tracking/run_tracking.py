"""Which MLflow store a run logs to, and opening (or reopening) its MLflow run.

The run id is written to the run directory as soon as the run exists, and kept in every checkpoint:
a resumed run, a worker group restarted after a failure, or the same run launched again all
continue one MLflow run instead of starting a second.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import RunConfig
from .mlflow_tracker import MlflowTracker, flatten_config
from .run_dir import RunDirectory

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SQLITE_PREFIX = "sqlite:///"


def resolve_tracking_uri(uri: str | None) -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db. A relative SQLite path becomes
    absolute against this process's working directory, so that workers started elsewhere (Ray
    workers run in their own folders) write the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(SQLITE_PREFIX):
        path = Path(uri[len(SQLITE_PREFIX):])
        if not path.is_absolute():
            return f"{SQLITE_PREFIX}{path.resolve()}"
    return uri


def open_run_tracker(cfg: RunConfig, run_dir: RunDirectory, run_id: str | None = None,
                     parent_run_id: str | None = None) -> MlflowTracker | None:
    """The run's MLflow tracker, started; None when tracking is off. It reopens `run_id`, else the run
    the run directory records; a new run gets the resolved config as params."""
    t = cfg.tracking
    if not t.enabled:
        return None
    run_id = run_id or run_dir.read_mlflow_run_id()
    tracker = MlflowTracker(resolve_tracking_uri(t.mlflow_uri), t.experiment, cfg.name, run_dir.path,
                            run_id=run_id, parent_run_id=parent_run_id)
    tracker.start()
    if run_id is None:
        if tracker.run_id is not None:
            run_dir.record_mlflow_run_id(tracker.run_id)
        tracker.log_params(flatten_config(cfg.model_dump(mode="json")))
    return tracker
