"""Learning-rate schedule: linear warm-up, then cosine or step decay, evaluated per step."""

from __future__ import annotations

import math

from ..config import OptimConfig


def lr_factor(step: int, steps_per_epoch: int, total_epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based)."""
    epoch = step / steps_per_epoch
    if epoch < cfg.warmup_epochs:
        return (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        span = max(total_epochs - cfg.warmup_epochs, 1e-12)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m * total_epochs for m in cfg.milestones)
    return 1.0
