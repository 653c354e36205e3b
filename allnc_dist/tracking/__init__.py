"""Where a run's records go: its run directory (config, metrics as JSON lines, report, plots)."""

from .run_dir import RunDirectory

__all__ = ["RunDirectory"]
