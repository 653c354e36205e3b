"""Evaluation: Neural Collapse metrics, Many / Medium / Few accuracy, cosine heatmaps."""

from .evaluation import (
    accuracy_by_split,
    accuracy_per_class,
    class_hits,
    class_splits,
    per_class_accuracy,
    split_accuracies,
)
from .neural_collapse import (
    SumOverRanks,
    branch_nc3,
    centred,
    class_means,
    nc_metrics,
    nc_metrics_and_means,
    one_process,
    pairwise_cosines,
)
from .plots import plot_cosine_heatmaps, plot_per_class_accuracy

__all__ = [
    "SumOverRanks",
    "accuracy_by_split",
    "accuracy_per_class",
    "branch_nc3",
    "centred",
    "class_hits",
    "class_means",
    "class_splits",
    "nc_metrics",
    "nc_metrics_and_means",
    "one_process",
    "pairwise_cosines",
    "per_class_accuracy",
    "plot_cosine_heatmaps",
    "plot_per_class_accuracy",
    "split_accuracies",
]
