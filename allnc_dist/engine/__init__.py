"""The training loop (`Trainer`) and the runtimes it runs on: `LocalRuntime` (one process) here, and
`RayDeepSpeedRuntime` (engine/ray_runtime.py, a Ray Train worker), which `ray_driver.fit_on_ray` starts."""

from .evaluate import evaluate
from .local_runtime import LocalRuntime
from .step import Batch, train_step
from .trainer import Trainer, TrainResult, train_locally

__all__ = ["Batch", "LocalRuntime", "TrainResult", "Trainer", "evaluate", "train_locally", "train_step"]
