"""P2P, the peer-to-peer loss of AllNC (NC2 + NC3).

Class means and classifier vectors are each other's peers: mean k must pick classifier k out of all
classifiers, and classifier k must pick mean k out of all means. Each class counts once, whatever its
training count, so minority means and vectors are spread as far as majority ones. For D >= K-1 the
minimiser is a shared simplex ETF (self-duality plus maximal separation).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F

from .etf import etf_gram


def p2p_loss(
    centred_means: torch.Tensor,
    centred_classifier: torch.Tensor,
    tau: float = 0.1,
    form: Literal["contrastive", "mse_gram"] = "mse_gram",
) -> torch.Tensor:
    """P2P over the K' classes given (rows of both (K', D) inputs correspond).

    contrastive: (1/2K') sum_k [CE(M_k W^T / tau, k) + CE(W_k M^T / tau, k)] on normalised rows.
    mse_gram:    mean_k ||M_k - W_k||^2 + etf_gap(W), the default (see docs/method.md for why).
    """
    means = F.normalize(centred_means, dim=1)
    classifier = F.normalize(centred_classifier, dim=1)
    if form == "mse_gram":
        return (means - classifier).pow(2).sum(1).mean() + etf_gap(classifier)
    logits = means @ classifier.T / tau
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def etf_gap(unit_rows: torch.Tensor) -> torch.Tensor:
    """||R R^T - (K/(K-1))(I - 11^T/K)||_F^2: how far K unit rows are from a simplex ETF."""
    target = cached_etf_gram(len(unit_rows), unit_rows.dtype, unit_rows.device)
    return (unit_rows @ unit_rows.T - target).pow(2).sum()


# The number of classes seen so far settles at K early in training, so a few entries suffice; an
# unbounded cache would keep one K'xK' matrix for every K' met on the way.
@functools.lru_cache(maxsize=4)
def cached_etf_gram(num_classes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`etf_gram` on `device`, built once rather than at every step (with a host-to-device copy on GPU).
    Shared between calls: never modify it in place."""
    return etf_gram(num_classes, dtype).to(device)


def p2p_lower_bound(num_classes: int, tau: float) -> float:
    """The contrastive P2P value at M = W = simplex ETF: log(1 + (K-1) exp(-K / ((K-1) tau)))."""
    k = num_classes
    return math.log1p((k - 1) * math.exp(-k / ((k - 1) * tau)))
