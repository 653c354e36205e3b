"""One training step, the same on every runtime.

forward of both branches -> losses -> backward -> optimiser. What differs between runtimes (plain
torch optimiser or a DeepSpeed engine) hides behind `Optimization` (engine/optimization.py).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
import torch

from ..method.objective import AllNCObjective
from .optimization import Optimization


@dataclass
class Batch:
    """The uniform batch and, when GBBN re-balances by sampler, the re-balanced one."""

    images: torch.Tensor
    labels: torch.Tensor
    images_rebalanced: torch.Tensor | None = None
    labels_rebalanced: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.images), move(self.labels), move(self.images_rebalanced), move(self.labels_rebalanced))

    def __len__(self) -> int:
        return len(self.labels)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the loss parts."""


def train_step(
    model: torch.nn.Module,
    objective: AllNCObjective,
    batch: Batch,
    alpha: float,
    progress: float,
    optimization: Optimization,
    autocast: contextlib.AbstractContextManager | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Run one step at `progress` (fractional epochs, which the auxiliary losses' warm-up reads);
    returns the loss parts as floats. Raises NonFiniteLossError before updating."""
    with autocast or contextlib.nullcontext():
        out = model(batch.images, batch.images_rebalanced, alpha)
    losses = objective(out, batch.labels, batch.labels_rebalanced, alpha, progress)
    values = losses.values()
    if not math.isfinite(values["total"]):
        parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        raise NonFiniteLossError(f"non-finite loss at step {step} (epoch {progress:.2f}): {parts}")
    optimization.backward(losses.total)
    optimization.step()
    return values
