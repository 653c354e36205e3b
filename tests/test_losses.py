"""HyCon, P2P and the classification baselines: gradients, invariances, and hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from allnc_dist.method.classification import (
    dot_regression_loss,
    effective_number_weights,
    ldam_loss,
    ldam_margins,
    log_prior,
    logit_adjusted_ce,
)
from allnc_dist.method.etf import simplex_etf
from allnc_dist.method.hycon import hycon_loss
from allnc_dist.method.p2p import p2p_loss, p2p_lower_bound


def _unit(shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


LABELS = torch.tensor([0, 0, 1, 2, 2, 2])
VALID = torch.tensor([True, True, True, False])  # class 3 not seen yet


@pytest.mark.parametrize("use_samples", [True, False])
def test_hycon_gradcheck(use_samples):
    z = _unit((6, 5), 0).requires_grad_()
    p = _unit((4, 5), 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: hycon_loss(a, LABELS, b, VALID, 0.5, use_samples), (z, p))


def test_hycon_is_invariant_to_batch_order():
    z, p = _unit((6, 5), 0), _unit((4, 5), 1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(hycon_loss(z, LABELS, p, VALID, 0.1), hycon_loss(z[perm], LABELS[perm], p, VALID, 0.1))


def test_hycon_hand_computed_two_view_case():
    # Prototypes only: each anchor's loss is CE over the valid prototypes.
    z, p = _unit((6, 5), 0), _unit((4, 5), 1)
    logits = (z @ p.T / 0.2)[:, :3]
    expected = F.cross_entropy(logits, LABELS)
    torch.testing.assert_close(hycon_loss(z, LABELS, p, VALID, 0.2, use_samples=False), expected)


def test_hycon_hand_computed_single_pair():
    # Two anchors of class 0, one prototype per class (K=2). For anchor 0: A_0 = {z1, p0}, A_1 = {p1}.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    tau = 1.0

    def anchor_loss(zi, other):
        positives = [zi @ other, zi @ p[0]]
        denominator = 0.5 * (math.exp(positives[0]) + math.exp(positives[1])) + math.exp(zi @ p[1])
        return -sum(pp - math.log(denominator) for pp in positives) / 2

    expected = float(0.5 * (anchor_loss(z[0], z[1]) + anchor_loss(z[1], z[0])))
    got = hycon_loss(z, labels, p, torch.tensor([True, True]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("form", ["contrastive", "contrastive_gram", "mse_gram"])
def test_p2p_gradcheck(form):
    m = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: p2p_loss(a, b, 0.5, form), (m, w))


def _squeezed(etf, minority, shrink):
    """The ETF with the minority rows pulled towards their common mean direction (minority collapse)."""
    rows = etf.clone()
    centre = rows[minority].mean(0)
    rows[minority] = (1 - shrink) * rows[minority] + shrink * centre
    return rows


@pytest.mark.parametrize("k", [4, 10])
def test_p2p_contrastive_minimal_at_etf(k):
    etf = simplex_etf(k, 16, dtype=torch.float64)
    at_etf = p2p_loss(etf, etf, 0.1, "contrastive").item()
    assert at_etf == pytest.approx(p2p_lower_bound(k, 0.1), rel=1e-9)
    squeezed = _squeezed(etf, list(range(k // 2, k)), 0.8)
    assert p2p_loss(squeezed, squeezed, 0.1, "contrastive").item() > at_etf * 10
    # Misaligned means and classifier cost more too.
    assert p2p_loss(etf, etf.roll(1, 0), 0.1, "contrastive").item() > 1.0


def test_p2p_contrastive_hardly_tells_two_orthogonal_simplices_from_the_etf_and_the_gram_gap_does():
    """K = 10 as two orthogonal simplices of 5 (cosine -1/4 within a group, 0 across): the layout the
    UFM's Few classes settle in under the contrastive form (docs/method.md)."""
    groups = torch.zeros(10, 16, dtype=torch.float64)
    groups[:5, :8], groups[5:, 8:] = simplex_etf(5, 8, dtype=torch.float64), simplex_etf(5, 8, dtype=torch.float64)
    etf = simplex_etf(10, 16, dtype=torch.float64)
    contrastive = [p2p_loss(x, x, 0.1, "contrastive").item() for x in (etf, groups)]
    assert 0 < contrastive[1] - contrastive[0] < 2e-4
    # The gap by hand: 40 ordered pairs at -1/4 and 50 at 0, against -1/9: (40 (5/36)^2 + 50 (1/9)^2) / 90.
    assert p2p_loss(groups, groups, 0.1, "contrastive_gram").item() - contrastive[1] == pytest.approx(5 / 324)
    assert p2p_loss(etf, etf, 0.1, "contrastive_gram").item() == pytest.approx(contrastive[0], abs=1e-12)


def test_p2p_mse_gram_is_zero_at_etf_and_positive_when_squeezed():
    etf = simplex_etf(10, 16, dtype=torch.float64)
    assert p2p_loss(etf, etf).item() == pytest.approx(0.0, abs=1e-12)
    squeezed = _squeezed(etf, list(range(5, 10)), 0.8)
    assert p2p_loss(squeezed, squeezed).item() > 0.1
    assert p2p_loss(etf, squeezed).item() > p2p_loss(squeezed, squeezed).item()


def test_p2p_is_scale_and_shift_free_in_its_inputs():
    m, w = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    torch.testing.assert_close(p2p_loss(m, w), p2p_loss(3.0 * m, 0.5 * w))


def test_logit_adjustment_matches_hand_computation():
    counts = [90, 10]
    logits = torch.tensor([[1.0, 1.0]])
    got = logit_adjusted_ce(logits, torch.tensor([1]), log_prior(counts), tau=1.0)
    # z + log pi = [1 + log .9, 1 + log .1]; CE for class 1 = -log(.1 / (.9 + .1)).
    assert got.item() == pytest.approx(-math.log(0.1), rel=1e-6)


def test_ldam_margins_and_loss():
    margins = ldam_margins([10000, 625, 16], max_margin=0.5)
    torch.testing.assert_close(margins, torch.tensor([0.1, 0.2, 0.5]))
    cos = torch.tensor([[0.2, 0.1, 0.3]])
    got = ldam_loss(30 * cos, torch.tensor([2]), margins, scale=30.0)
    expected = F.cross_entropy(30 * torch.tensor([[0.2, 0.1, 0.3 - 0.5]]), torch.tensor([2]))
    torch.testing.assert_close(got, expected)


def test_effective_number_weights():
    w = effective_number_weights([100, 1], beta=0.9)
    # (1 - .9) / (1 - .9^n): n=1 -> 1, n=100 -> ~0.1; normalised to sum K = 2.
    raw = torch.tensor([0.1 / (1 - 0.9**100), 1.0])
    torch.testing.assert_close(w, (2 * raw / raw.sum()).float())


def test_dot_regression_zero_when_aligned():
    etf = simplex_etf(4, 6)
    cosines = F.normalize(etf, dim=1) @ etf.T
    assert dot_regression_loss(cosines, torch.arange(4)).item() == pytest.approx(0.0, abs=1e-7)
    assert dot_regression_loss(torch.zeros(1, 4), torch.tensor([0])).item() == pytest.approx(0.5)
