"""Classification losses: CE and the long-tailed baselines, on one set of logits.

- logit-adjusted CE (Menon et al. 2021): CE(z + tau log pi, y);
- LDAM (Cao et al. 2019): margins C / n_k^(1/4) subtracted from the true-class cosine logit,
  with deferred re-weighting (DRW) by effective-number weights (Cui et al. 2019) late in training;
- dot regression (Yang et al. 2022) for the fixed-ETF classifier: 1/2 (cos(h, w_y) - 1)^2.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..config import MethodConfig


def log_prior(class_counts: Sequence[int]) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    return (counts / counts.sum()).clamp(min=1e-12).log()


def effective_number_weights(class_counts: Sequence[int], beta: float) -> torch.Tensor:
    """Class weights (1 - beta) / (1 - beta^n_k), normalised to sum to K."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1)
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return (weights * len(weights) / weights.sum()).float()


def ldam_margins(class_counts: Sequence[int], max_margin: float) -> torch.Tensor:
    """Margins proportional to n_k^(-1/4), the largest equal to `max_margin`."""
    margins = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1) ** -0.25
    return (margins * (max_margin / margins.max())).float()


def logit_adjusted_ce(logits: torch.Tensor, labels: torch.Tensor, prior_log: torch.Tensor, tau: float) -> torch.Tensor:
    return F.cross_entropy(logits + tau * prior_log, labels)


def ldam_loss(
    scaled_cosines: torch.Tensor,
    labels: torch.Tensor,
    margins: torch.Tensor,
    scale: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """`scaled_cosines` are s*cos(h, w_k); the true class's logit is lowered by s*margin_y."""
    shift = F.one_hot(labels, scaled_cosines.shape[1]) * (scale * margins[labels]).unsqueeze(1)
    return F.cross_entropy(scaled_cosines - shift, labels, weight=weight)


def dot_regression_loss(cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 0.5 * (cosines.gather(1, labels.unsqueeze(1)) - 1.0).pow(2).mean()


class ClassificationLoss:
    """The loss l of the method config, plus the loss-based re-balancing of GBBN's second branch."""

    def __init__(self, cfg: MethodConfig, class_counts: Sequence[int], total_epochs: int) -> None:
        self.cfg = cfg
        self.total_epochs = total_epochs
        self.prior_log = log_prior(class_counts)
        self.class_weights = effective_number_weights(class_counts, cfg.drw_beta)
        self.margins = ldam_margins(class_counts, cfg.ldam_max_margin)

    def _match(self, logits: torch.Tensor) -> None:
        """Keep the per-class constants on the logits' device and dtype."""
        if self.prior_log.device != logits.device or self.prior_log.dtype != logits.dtype:
            self.prior_log, self.class_weights, self.margins = (
                t.to(logits.device, logits.dtype) for t in (self.prior_log, self.class_weights, self.margins)
            )

    def drw_active(self, epoch: float) -> bool:
        return self.cfg.drw_start is not None and epoch >= self.cfg.drw_start * self.total_epochs

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, epoch: float) -> torch.Tensor:
        self._match(logits)
        weight = self.class_weights if self.drw_active(epoch) else None
        if self.cfg.loss == "la":
            return logit_adjusted_ce(logits, labels, self.prior_log, self.cfg.la_tau)
        if self.cfg.loss == "ldam":
            return ldam_loss(logits, labels, self.margins, self.cfg.cosine_scale, weight)
        if self.cfg.loss == "dr":
            return dot_regression_loss(logits, labels)
        return F.cross_entropy(logits, labels, weight=weight)

    def rebalanced(self, logits: torch.Tensor, labels: torch.Tensor, epoch: float) -> torch.Tensor:
        """GBBN's re-balancing branch loss when it re-balances by loss instead of by sampler."""
        self._match(logits)
        if self.cfg.gbbn.rebalance == "logit_adjust":
            return logit_adjusted_ce(logits, labels, self.prior_log, self.cfg.la_tau)
        if self.cfg.gbbn.rebalance == "reweight":
            return F.cross_entropy(logits, labels, weight=self.class_weights)
        return self(logits, labels, epoch)
