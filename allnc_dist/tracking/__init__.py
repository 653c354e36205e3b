"""Where a run's records go: its run directory (config, metrics as JSON lines, report, plots) and,
when tracking.mlflow_uri is set, an MLflow run (with a local fallback when the server is unreachable)."""

from .mlflow_tracker import MlflowTracker, flatten_config
from .run_dir import RunDirectory

__all__ = ["MlflowTracker", "RunDirectory", "flatten_config"]
