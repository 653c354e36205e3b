"""One training step, shared unchanged by the local and the distributed engines.

forward of both branches -> losses -> backward -> optimiser. What differs between engines (plain
torch optimiser or a DeepSpeed engine) hides behind `Optimization`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ..method.objective import AllNCObjective


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


class Optimization(Protocol):
    """Backward and update, as the engine does them."""

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the loss parts."""


def train_step(
    model: torch.nn.Module,
    objective: AllNCObjective,
    batch: Batch,
    alpha: float,
    epoch: float,
    optimization: Optimization,
    autocast: contextlib.AbstractContextManager | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Run one step; returns the loss parts as floats. Raises NonFiniteLossError before updating."""
    with autocast or contextlib.nullcontext():
        out = model(batch.images, batch.images_rebalanced, alpha)
    losses = objective(out, batch.labels, batch.labels_rebalanced, alpha, epoch)
    values = losses.values()
    if not math.isfinite(values["total"]):
        parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        raise NonFiniteLossError(f"non-finite loss at step {step} (epoch {epoch:.2f}): {parts}")
    optimization.backward(losses.total)
    optimization.step()
    return values
