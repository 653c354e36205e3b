"""Engines that run the training loop: the local one (one process) here; all share `train_step`."""

from .evaluate import evaluate
from .local import LocalTrainer
from .step import Batch, train_step

__all__ = ["Batch", "LocalTrainer", "evaluate", "train_step"]
