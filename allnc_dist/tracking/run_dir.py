"""A run directory: the resolved config, metrics as JSON lines, the checkpoint and the final report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig, dump_config
from .mlflow_tracker import FALLBACK_NAME


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    report_path = property(lambda self: self.path / "report.json")
    geometry_path = property(lambda self: self.path / "geometry.pt")
    model_path = property(lambda self: self.path / "model.pt")
    plots_path = property(lambda self: self.path / "plots")
    mlflow_run_id_path = property(lambda self: self.path / "mlflow_run_id")

    def output_paths(self) -> list[Path]:
        """Where a run keeps its outputs besides its checkpoint (and Ray's storage, when it is here)."""
        return [self.config_path, self.metrics_path, self.report_path, self.geometry_path, self.model_path,
                self.plots_path, self.mlflow_run_id_path, self.path / FALLBACK_NAME]

    def outputs(self) -> list[Path]:
        """The outputs written so far."""
        return [path for path in self.output_paths() if path.exists()]

    def restore_outputs(self, saved: RunDirectory) -> None:
        """Make the outputs here those `saved` holds (a checkpoint's copy of the run folder): an output
        it lacks is removed, as it was written after that checkpoint (metrics.jsonl before the first
        epoch ended, the report before the run finished)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for mine in self.output_paths():
            if mine.is_dir():
                shutil.rmtree(mine)
            else:
                mine.unlink(missing_ok=True)
        saved.copy_outputs(self.path)

    def copy_outputs(self, folder: str | Path) -> None:
        """Copy the run's outputs into `folder` (created), replacing what is there."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for path in self.outputs():
            if path.is_dir():
                shutil.copytree(path, folder / path.name, dirs_exist_ok=True)
            else:
                shutil.copy2(path, folder / path.name)

    def create(self, cfg: RunConfig) -> None:
        """Start a new run here; a folder that already holds a run is never overwritten."""
        if self.config_path.exists():
            raise FileExistsError(
                f"{self.path} already holds a run: continue it with --resume, or choose another run directory"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.config_path)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (a training or evaluation row) to metrics.jsonl."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def write_report(self, report: dict[str, Any]) -> None:
        self.report_path.write_text(json.dumps(report, indent=2) + "\n")

    def record_mlflow_run_id(self, run_id: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.mlflow_run_id_path.write_text(run_id + "\n")

    def read_mlflow_run_id(self) -> str | None:
        """The MLflow run this run directory logs to, once one was created."""
        if not self.mlflow_run_id_path.exists():
            return None
        return self.mlflow_run_id_path.read_text().strip() or None
