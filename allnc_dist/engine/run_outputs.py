"""What a finished run leaves behind (rank 0): the report, the final geometry, the plots and the
model with its class-mean trackers, in the run directory and as MLflow artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..config import RunConfig
from ..durable_files import atomic_output
from ..metrics import plot_per_class_accuracy
from ..metrics.plots import plot_geometry
from ..tracking import MlflowTracker, RunDirectory
from .evaluate import Evaluation


def write_run_outputs(cfg: RunConfig, run_dir: RunDirectory, report: dict, final: Evaluation, model_state: dict,
                      tracker: MlflowTracker | None) -> None:
    run_dir.write_report(report)
    torch.save({"classifier": final.classifier, "class_means": final.class_means,
                "per_class_accuracy": final.per_class_accuracy}, run_dir.geometry_path)
    plots = plot_final_geometry(cfg, final, report["class_counts"], run_dir.plots_path)
    with atomic_output(run_dir.model_path) as tmp:
        torch.save(model_state, tmp)
    if tracker is None:
        return
    for path in (run_dir.config_path, run_dir.report_path, run_dir.metrics_path):
        tracker.log_artifact(path)
    for path in plots:
        tracker.log_artifact(path, "plots")
    tracker.log_artifact(run_dir.model_path, "model")


def plot_final_geometry(cfg: RunConfig, final: Evaluation, class_counts: Sequence[int], folder: Path) -> list[Path]:
    """The cosine heatmaps and the per-class accuracy of the final model."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = plot_geometry({cfg.name: final}, class_counts, folder)
    accuracy_path = folder / "per_class_accuracy.png"
    plot_per_class_accuracy(final.per_class_accuracy, class_counts, accuracy_path,
                            title=f"{cfg.name}: {cfg.train.eval_split} accuracy per class against training count")
    return [*paths, accuracy_path]


def load_geometry(run_dir: RunDirectory, metrics: dict[str, float]) -> Evaluation:
    """The final evaluation a finished run wrote (its metrics come from the report)."""
    geometry = torch.load(run_dir.geometry_path, weights_only=True)
    return Evaluation(metrics, geometry["classifier"], geometry["class_means"], geometry["per_class_accuracy"])
