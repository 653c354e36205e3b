"""Where a run's records go: its run directory (config, metrics as JSON lines, report, plots) and an
MLflow run (rank 0 only; a local fallback file keeps what an unreachable server did not receive)."""

from .mlflow_tracker import MlflowTracker, flatten_config
from .run_dir import RunDirectory
from .run_tracking import DEFAULT_TRACKING_URI, open_run_tracker, resolve_tracking_uri
from .server import MlflowServer

__all__ = ["DEFAULT_TRACKING_URI", "MlflowServer", "MlflowTracker", "RunDirectory", "flatten_config",
           "open_run_tracker", "resolve_tracking_uri"]
