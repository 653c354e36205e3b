"""Simplex equiangular tight frame (ETF): K unit vectors in R^D with pairwise cosine -1/(K-1).

It is the geometry Neural Collapse converges to (Papyan et al. 2020), and the fixed classifier of
the ETF + DR baseline (Yang et al. 2022).
"""

from __future__ import annotations

import math

import torch


def simplex_etf(num_classes: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (K, D) simplex ETF, randomly rotated into R^D by a seeded rotation.

    A simplex of K vertices spans K-1 dimensions, so it exists whenever K <= D + 1.
    """
    k, d = num_classes, dim
    if k < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got num_classes={k}")
    if k > d + 1:
        raise ValueError(f"a simplex ETF of {k} classes needs dim >= {k - 1} (K <= D + 1), got dim={d}")
    centred = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    # Coordinates of the K vertices in an orthonormal basis of the (K-1)-dim subspace orthogonal to 1.
    basis = torch.linalg.svd(centred, full_matrices=False).U[:, : k - 1]
    coords = centred @ basis
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d, k - 1, generator=generator, dtype=torch.float64))
    return (coords @ rotation.T).to(dtype)


def etf_gram(num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Gram matrix of a simplex ETF: (K/(K-1)) (I - 11^T/K)."""
    k = num_classes
    return (k / (k - 1)) * (torch.eye(k, dtype=dtype) - 1.0 / k)
