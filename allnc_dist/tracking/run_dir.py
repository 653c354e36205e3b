"""A run directory: the resolved config, metrics as JSON lines, the checkpoint and the final report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig, dump_config


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
