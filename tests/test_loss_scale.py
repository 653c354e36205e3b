"""The auxiliary losses keep their size, and so their balance against the classification loss, from
K = 10 to K = 1000 classes, and stay finite at iNaturalist 2018's shape (K = 8142 > D + 1 = 2049).

"At initialisation" here means what a fresh network gives: non-negative (post-ReLU-like) random
features of a long-tailed batch, a freshly initialised bias-free linear classifier, and class-mean
trackers that have seen a few batches.
"""

import math

import pytest
import torch

from allnc_dist.config import MethodConfig
from allnc_dist.data.profiles import exponential_profile
from allnc_dist.method.classifiers import LinearClassifier
from allnc_dist.method.etf import simplex_etf
from allnc_dist.method.network import NetworkOutput
from allnc_dist.method.objective import AllNCObjective
from allnc_dist.method.p2p import etf_gap, p2p_loss, p2p_target, tight_frame_floor

SHAPES = [(10, 64), (100, 128), (1000, 512)]  # (K, D)
BATCH = 256
WARM_BATCHES = 4


def long_tailed_labels(counts, size, generator):
    prior = torch.as_tensor(counts, dtype=torch.float64)
    return torch.multinomial(prior / prior.sum(), size, replacement=True, generator=generator)


def initial_loss_parts(k, d, form, seed=0):
    """The loss parts of the last of WARM_BATCHES + 1 fresh long-tailed batches, at initialisation."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    counts = exponential_profile(500, k, 100.0)
    classifier = LinearClassifier(d, k).weight.detach()
    method = MethodConfig(preset="allnc_paper", gbbn={"enabled": False}, p2p={"form": form})  # every term on
    objective = AllNCObjective(method, counts, d, num_branches=1, total_epochs=1)
    for _ in range(WARM_BATCHES + 1):
        labels = long_tailed_labels(counts, BATCH, generator)
        features = torch.randn(BATCH, d, generator=generator).relu()
        out = NetworkOutput(features @ classifier.T, [features], [classifier], [None])
        parts = objective(out, labels, None, alpha=1.0, epoch=0.0)
    return parts.values()


@pytest.mark.parametrize("form", ["mse_gram", "contrastive", "contrastive_gram"])
def test_auxiliary_terms_and_total_keep_their_size_across_k(form):
    parts = {k: initial_loss_parts(k, d, form) for k, d in SHAPES}
    for name in ("hycon", "p2p", "total"):
        values = [parts[k][name] for k, _ in SHAPES]
        assert all(0.05 < v < 20 for v in values), (name, values)  # O(1), not O(K^2)
        assert max(values) <= 3 * min(values), (name, form, values)


def test_the_gram_term_is_a_mean_over_pairs():
    # Hand computation: mean over ordered pairs k != k' of (cos + 1/(K-1))^2, less the floor that 7 unit
    # vectors in R^5 cannot go below (K = 7 > D + 1).
    rows = torch.nn.functional.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    cosines = rows @ rows.T
    off_diagonal = ~torch.eye(7, dtype=torch.bool)
    expected = (cosines[off_diagonal] + 1 / 6).pow(2).mean() - tight_frame_floor(7, 5)
    torch.testing.assert_close(etf_gap(rows), expected)
    # The K'xK' and the DxD computations agree (K' > D here, K' < D below).
    wide = torch.nn.functional.normalize(torch.randn(4, 9, dtype=torch.float64), dim=1)
    expected_wide = ((wide @ wide.T)[~torch.eye(4, dtype=torch.bool)] + 1 / 3).pow(2).mean()
    torch.testing.assert_close(etf_gap(wide), expected_wide)


def test_the_gram_term_is_zero_at_its_target_in_both_regimes():
    etf = simplex_etf(10, 16, dtype=torch.float64)
    assert etf_gap(etf).item() == pytest.approx(0.0, abs=1e-12)
    assert p2p_target(10, 16, "mse_gram") == "simplex_etf"
    # K = 6 > D + 1 = 3: six evenly spaced unit vectors in the plane are a centred unit-norm tight frame.
    angles = 2 * math.pi * torch.arange(6, dtype=torch.float64) / 6
    harmonic = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert tight_frame_floor(6, 2) > 0
    assert etf_gap(harmonic).item() == pytest.approx(0.0, abs=1e-12)
    # Any other spread costs more: squeeze three of the six together.
    squeezed = harmonic.clone()
    squeezed[3:] = torch.nn.functional.normalize(squeezed[3:] + 2 * squeezed[3:].mean(0), dim=1)
    assert etf_gap(squeezed).item() > 0.05
    assert p2p_target(6, 2, "mse_gram") == p2p_target(6, 2, "contrastive_gram") == "tight_frame"
    assert p2p_target(6, 2, "contrastive") == "uniform_spread"


@pytest.mark.parametrize("preset", ["allnc", "allnc_paper"])  # P2P contrastive (K'xK' logits), and mse_gram + HyCon
def test_one_step_at_inaturalist_shape_is_finite(preset):
    k, d, batch = 8142, 2048, 64
    generator = torch.Generator().manual_seed(0)
    method = MethodConfig(preset=preset, gbbn={"enabled": False})
    form = method.p2p.form
    objective = AllNCObjective(method, [1000] * 10 + [10] * (k - 10), d, num_branches=1, total_epochs=1)
    # A tracker that has seen every class already, as after the first epoch: P2P then spans all K.
    objective.trackers[0].load_state_dict(
        {"ema": torch.randn(k, d, generator=generator).relu(), "seen": torch.ones(k, dtype=torch.bool), "step": 100}
    )
    assert objective.geometry_target == p2p_target(k, d, form) != "simplex_etf"
    features = torch.randn(batch, d, generator=generator).relu().requires_grad_()
    classifier = (0.01 * torch.randn(k, d, generator=generator)).requires_grad_()
    labels = torch.randint(0, k, (batch,), generator=generator)
    out = NetworkOutput(features @ classifier.T, [features], [classifier], [None])
    parts = objective(out, labels, None, alpha=1.0, epoch=0.0)
    parts.total.backward()
    assert all(math.isfinite(v) for v in parts.values().values()), parts.values()
    assert torch.isfinite(features.grad).all() and torch.isfinite(classifier.grad).all()
    assert classifier.grad.abs().sum() > 0
