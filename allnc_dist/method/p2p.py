"""P2P, the peer-to-peer loss of AllNC (NC2 + NC3).

Class means and classifier vectors are each other's peers: mean k must pick classifier k out of all
classifiers, and classifier k must pick mean k out of all means. Each class counts once, whatever its
training count, so minority means and vectors are spread as far as majority ones.

Every term is a mean over what it compares (classes, or pairs of classes), so its size at
initialisation and its balance against the classification loss do not depend on K or D.

The target geometry depends on K' (classes seen) and D:
- K' <= D + 1: a shared simplex ETF, pairwise cosine -1/(K'-1) (self-duality plus maximal separation);
- K' > D + 1 (iNaturalist 2018: K = 8142, D = 2048): no simplex ETF exists in R^D. The Gram gap of
  `mse_gram` is then minimised by a centred unit-norm tight frame (Gram eigenvalues K'/D on D
  directions), the most even spread that R^D allows; its unreachable part (`tight_frame_floor`) is
  subtracted, so the term is 0 at its optimum. The contrastive form aims at the uniform spread that
  minimises it. `p2p_target` names the target, and every run's report states it.

The contrastive form alone hardly tells the simplex from other well-separated layouts: at tau = 0.1 its
value at two orthogonal simplices of K/2 classes each is within about 1e-4 of its value at the ETF, so
with an imbalanced classification loss the Few classes settle at their own simplex (cosine -1/(K/2 - 1),
docs/method.md). `contrastive_gram` (the default preset's) adds the Gram gap of `mse_gram` to it, which
separates the two.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from allnc_dist.config.method import P2PForm


def p2p_loss(
    centred_means: torch.Tensor,
    centred_classifier: torch.Tensor,
    tau: float = 0.1,
    form: P2PForm = "mse_gram",
) -> torch.Tensor:
    """P2P over the K' classes given (rows of both (K', D) inputs correspond).

    contrastive:      (1/2K') sum_k [CE(M_k W^T / tau, k) + CE(W_k M^T / tau, k)] on normalised rows.
    contrastive_gram: contrastive + etf_gap(W).
    mse_gram:         mean_k ||M_k - W_k||^2 + etf_gap(W), the field's default (docs/method.md says why).
    """
    means = F.normalize(centred_means, dim=1)
    classifier = F.normalize(centred_classifier, dim=1)
    if form == "mse_gram":
        return (means - classifier).pow(2).sum(1).mean() + etf_gap(classifier)
    logits = means @ classifier.T / tau
    target = torch.arange(len(logits), device=logits.device)
    contrastive = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return contrastive + etf_gap(classifier) if form == "contrastive_gram" else contrastive


def etf_gap(unit_rows: torch.Tensor) -> torch.Tensor:
    """Mean over the K'(K'-1) ordered pairs k != k' of (cos_kk' + 1/(K'-1))^2, less its reachable floor:
    how far K' unit rows are from the even spread (a simplex ETF when K' <= D + 1).

    It is ||R R^T - (K'/(K'-1))(I - 11^T/K')||_F^2 / (K'(K'-1)), computed without the K'xK' Gram:
    ||R R^T||_F = ||R^T R||_F, and the sum of all Gram entries is ||sum_k r_k||^2. Memory and time are
    then O(K'D + D^2), which matters at K' = 8142.
    """
    k, d = unit_rows.shape
    if k < 2:
        return unit_rows.new_zeros(())
    t = -1.0 / (k - 1)  # the simplex cosine
    small = unit_rows @ unit_rows.T if k <= d else unit_rows.T @ unit_rows
    gram_squared = small.pow(2).sum()
    entry_sum = unit_rows.sum(0).pow(2).sum()
    diagonal = k * (1.0 - t) ** 2  # unit rows: every diagonal entry is 1, its target too (no gap)
    gap_sum = gram_squared - 2.0 * t * entry_sum + k * k * t * t - diagonal
    return gap_sum / (k * (k - 1)) - tight_frame_floor(k, d)


def tight_frame_floor(num_classes: int, dim: int) -> float:
    """The least mean (cos + 1/(K-1))^2 over pairs that K unit vectors in R^D can reach: 0 when K <= D + 1
    (a simplex ETF), else (K/D - K/(K-1)) / (K-1), reached by a centred unit-norm tight frame
    (sum of Gram entries 0 and Gram eigenvalues K/D, so ||G||_F^2 = K^2/D is least)."""
    k, d = num_classes, dim
    if k <= d + 1:
        return 0.0
    return (k / d - k / (k - 1)) / (k - 1)


def p2p_target(num_classes: int, dim: int, form: P2PForm) -> str:
    """The geometry P2P drives the classes towards: 'simplex_etf' when K <= D + 1, else 'tight_frame'
    (the forms with the Gram gap) or 'uniform_spread' (contrastive), since no simplex ETF fits in R^D."""
    if num_classes <= dim + 1:
        return "simplex_etf"
    return "uniform_spread" if form == "contrastive" else "tight_frame"


def p2p_lower_bound(num_classes: int, tau: float) -> float:
    """The contrastive P2P value at M = W = simplex ETF: log(1 + (K-1) exp(-K / ((K-1) tau)))."""
    k = num_classes
    return math.log1p((k - 1) * math.exp(-k / ((k - 1) * tau)))
