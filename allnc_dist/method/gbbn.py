"""GBBN's schedule: the cumulative weight alpha_t that mixes the two branches' logits (after BBN,
Zhou et al. 2020), moving training from feature learning (alpha = 1) to classifier re-balancing
(alpha = 0). The two-branch network itself is method/network.py.
"""

from __future__ import annotations

import math

from ..config import GBBNConfig


def cumulative_alpha(epoch: float, total_epochs: int, cfg: GBBNConfig) -> float:
    """alpha_t at progress `epoch` (fractional epochs): parabolic 1-(t/T)^2, linear, cosine or step."""
    t = min(max(epoch / total_epochs, 0.0), 1.0)
    if cfg.schedule == "parabolic":
        return 1.0 - t**2
    if cfg.schedule == "linear":
        return 1.0 - t
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 if epoch < cfg.switch_epoch else 0.0
