"""The optimiser, its schedule, and the plain-torch update (what the local runtime steps with).

`TorchOptimization` and the DeepSpeed runtime's `DeepSpeedOptimization` share one interface: the
network a step runs forward through, backward, step, and a state in torch's own optimiser layout
(full tensors, indexed by parameter order). That shared layout is what lets a checkpoint written by
one runtime resume under the other.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch

from ..config import RunConfig
from .schedule import lr_factor


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One parameter group over every trainable parameter, in `model.parameters()` order."""
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """Warm-up then decay, stepped once per optimiser update."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: lr_factor(update, updates_per_epoch, cfg.train.epochs, cfg.optim)
    )


class Optimization(Protocol):
    """Backward and update, as a runtime does them, and their state for checkpoints."""

    network: torch.nn.Module  # what a step runs forward through

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> None: ...

    def lr(self) -> float: ...

    def state_dict(self) -> dict:
        """{"optimizer": torch layout with full tensors, "scheduler": ...}; collective under ZeRO."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def full_parameters(self) -> contextlib.AbstractContextManager:
        """Inside it, every rank's `model` holds its whole parameters (ZeRO-3 gathers them)."""
        ...


class TorchOptimization:
    """Backward and update with a plain torch optimiser: clip, step, zero, advance the schedule."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, grad_clip: float | None):
        self.network = model
        self.optimizer, self.scheduler, self.grad_clip = optimizer, scheduler, grad_clip

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def full_parameters(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()
