"""Evaluation: Neural Collapse metrics, Many / Medium / Few accuracy, cosine heatmaps."""

from .evaluation import accuracy_by_split, class_splits
from .neural_collapse import centred, class_means, nc_metrics, pairwise_cosines
from .plots import plot_cosine_heatmaps

__all__ = [
    "accuracy_by_split",
    "centred",
    "class_means",
    "class_splits",
    "nc_metrics",
    "pairwise_cosines",
    "plot_cosine_heatmaps",
]
