"""Collectives whose result keeps a gradient through this worker's own contribution only.

Every worker computes the same global loss from the all-reduced / all-gathered tensor. The remote
parts are detached constants; the local part carries gradient, scaled by the world size W, because
DeepSpeed and DDP average gradients over workers. After that average each worker's features receive
exactly the gradient of the global loss, so W workers x batch B train like 1 worker x batch W*B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size(group: dist.ProcessGroup | None = None) -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


def rank(group: dist.ProcessGroup | None = None) -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group)
    return 0


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` unchanged in value, with its gradient multiplied by `scale`."""
    if scale == 1:
        return x
    detached = x.detach()
    return detached + scale * (x - detached)


def all_reduce_sum_with_local_grad(local: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum of `local` over workers; gradient flows (W-scaled) into this worker's `local` only."""
    w = world_size(group)
    if w == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total + scale_grad(local, w) - local.detach()


def all_gather_with_local_grad(local: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenation of every worker's `local` along dim 0, in rank order; only this worker's rows
    carry gradient (W-scaled). Every worker must pass the same shape (the engines drop last batches).
    """
    w = world_size(group)
    if w == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(w)]
    dist.all_gather(parts, local.detach().contiguous(), group=group)
    parts[rank(group)] = scale_grad(local, w)
    return torch.cat(parts, dim=0)
