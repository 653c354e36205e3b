"""Global per-class feature means, synchronised over all workers every step.

Each step every worker sums its features per class; the sums and counts cross workers as one fused
(K, D+1) all-reduce, or, when the global batch is smaller than K, as an all-gather of the batch
itself (fewer bytes). The global batch means m_k then update an EMA mu_k <- beta mu_k + (1-beta) m_k
for the classes present. The means handed to the losses, mu'_k = beta mu_k + (1-beta) m_k, carry
gradient into this worker's features (see `collectives`), so the losses move features, not only W.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.distributed as dist

from .collectives import all_gather_with_local_grad, all_reduce_sum_with_local_grad, world_size

SyncMode = Literal["auto", "all_reduce", "all_gather"]


@dataclass
class ClassMeans:
    """The means of one step, as the losses see them."""

    means: torch.Tensor  # (K, D): mu'_k for classes in this batch, the EMA for others seen, 0 for unseen
    seen: torch.Tensor  # (K,) bool: classes seen so far, this batch included
    present: torch.Tensor  # (K,) bool: classes in this step's global batch

    @cached_property
    def seen_index(self) -> torch.Tensor:
        """Indices of the classes seen so far, found once: every selection by the boolean mask would
        read its size back to the host (a device sync on GPU), and a step makes four per branch."""
        return self.seen.nonzero().squeeze(1)

    def seen_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of a (K, ...) tensor for the classes seen so far, in class order."""
        return rows.index_select(0, self.seen_index)

    @property
    def centre(self) -> torch.Tensor:
        """Class-balanced centre mu_G over the classes seen so far."""
        return self.seen_rows(self.means).mean(dim=0)


@dataclass
class GlobalBatch:
    """Features and labels of all workers' batches, in rank order (only the local rows have gradient)."""

    features: torch.Tensor  # (W*B, D)
    labels: torch.Tensor  # (W*B,)


def gather_global_batch(features: torch.Tensor, labels: torch.Tensor, group: dist.ProcessGroup | None = None) -> GlobalBatch:
    """All-gather (features, labels) as one fused tensor: labels ride along as an extra float column."""
    fused = torch.cat([features, labels.to(features.dtype).unsqueeze(1)], dim=1)
    gathered = all_gather_with_local_grad(fused, group)
    return GlobalBatch(gathered[:, :-1], gathered[:, -1].detach().round().long())


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Means and losses are computed in fp32 at least, whatever the autocast precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def per_class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums and counts of a batch, in the features' dtype (fp32 or wider: counts stay exact)."""
    sums = features.new_zeros(num_classes, features.shape[1]).index_add(0, labels, features)
    # Counted by adding ones rather than by bincount, which reads the largest label back to the host
    # (a device sync on GPU); sums of ones are exact integers in fp32 up to 2^24.
    counts = features.new_zeros(num_classes).index_add(0, labels, features.new_ones(len(labels)))
    return sums, counts


class ClassMeanTracker:
    """EMA of the global class means, with the gradient path the AllNC losses need.

    State (EMA, seen-mask, step) is kept in fp32 at least (fp64 when the features are), and saved
    and restored through `state_dict` / `load_state_dict`.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        beta: float = 0.9,
        sync: SyncMode = "auto",
        group: dist.ProcessGroup | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.num_classes, self.dim, self.beta, self.sync, self.group = num_classes, dim, beta, sync, group
        self.ema = torch.zeros(num_classes, dim, device=device)
        self.seen = torch.zeros(num_classes, dtype=torch.bool, device=device)
        self.step = 0

    def sync_mode(self, local_batch: int) -> Literal["all_reduce", "all_gather"]:
        """all_gather moves W*B*(D+1) numbers per worker, all_reduce about 2*K*(D+1): pick the smaller."""
        if self.sync != "auto":
            return self.sync
        return "all_gather" if world_size(self.group) * local_batch < 2 * self.num_classes else "all_reduce"

    def update(self, features: torch.Tensor, labels: torch.Tensor, global_batch: GlobalBatch | None = None) -> ClassMeans:
        """Fold this step's global batch into the EMA and return the means for the losses.

        `global_batch`, when the caller has gathered it already (HyCon's global negatives), gives the
        sums with no further communication.
        """
        features = at_least_fp32(features)
        self.ema = self.ema.to(features.dtype)
        if global_batch is None and self.sync_mode(len(labels)) == "all_gather" and world_size(self.group) > 1:
            global_batch = gather_global_batch(features, labels, self.group)
        if global_batch is not None:
            sums, counts = per_class_sums(at_least_fp32(global_batch.features), global_batch.labels, self.num_classes)
        else:
            local_sums, local_counts = per_class_sums(features, labels, self.num_classes)
            fused = all_reduce_sum_with_local_grad(torch.cat([local_sums, local_counts.unsqueeze(1)], dim=1), self.group)
            sums, counts = fused[:, :-1], fused[:, -1].detach()
        return self._fold(sums, counts)

    def _fold(self, sums: torch.Tensor, counts: torch.Tensor) -> ClassMeans:
        present = counts > 0
        batch_means = sums / counts.clamp(min=1).unsqueeze(1)
        # A class met for the first time starts its EMA at the batch mean.
        weight_old = torch.where(self.seen, self.beta, 0.0).unsqueeze(1)
        blended = weight_old * self.ema + (1.0 - weight_old) * batch_means
        means = torch.where(present.unsqueeze(1), blended, self.ema)
        self.ema = means.detach().clone()
        self.seen = self.seen | present
        self.step += 1
        return ClassMeans(means=means, seen=self.seen.clone(), present=present)

    def state_dict(self) -> dict:
        return {"ema": self.ema.detach().cpu().clone(), "seen": self.seen.cpu().clone(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["ema"].shape) != (self.num_classes, self.dim):
            raise ValueError(
                f"class-mean state has shape {tuple(state['ema'].shape)}, expected {(self.num_classes, self.dim)}"
            )
        self.ema = state["ema"].to(self.ema.device, torch.float32)
        self.seen = state["seen"].to(self.seen.device, torch.bool)
        self.step = int(state["step"])
