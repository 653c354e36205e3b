"""The GBBN network and its cumulative schedules, and the losses it feeds."""

import pytest
import torch

from allnc_dist.config import GBBNConfig, MethodConfig, ModelConfig, load_config
from allnc_dist.method.gbbn import GBBNNetwork, cumulative_alpha
from allnc_dist.method.objective import AllNCObjective
from allnc_dist.models import build_backbone


@pytest.mark.parametrize(
    "schedule,expected",
    [("parabolic", [1.0, 0.75, 0.0]), ("linear", [1.0, 0.5, 0.0]), ("cosine", [1.0, 0.5, 0.0])],
)
def test_cumulative_schedules(schedule, expected):
    cfg = GBBNConfig(schedule=schedule)
    got = [cumulative_alpha(t, 10, cfg) for t in (0.0, 5.0, 10.0)]
    assert got == pytest.approx(expected)


def test_hard_switch():
    cfg = GBBNConfig(schedule="step", switch_epoch=3)
    assert [cumulative_alpha(t, 10, cfg) for t in (0, 2.9, 3, 9)] == [1.0, 1.0, 0.0, 0.0]


def _network(method: MethodConfig, k=5):
    torch.manual_seed(0)
    return GBBNNetwork(build_backbone(ModelConfig(width=4), in_channels=1), k, method)


def test_alpha_mixes_the_branch_logits():
    net = _network(MethodConfig()).eval()
    x, xr = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    full = net(x, xr, alpha=1.0)
    conventional = net.classifiers[0](net.stages[0](net.trunk(x)))
    torch.testing.assert_close(full.logits, conventional)
    zero = net(x, xr, alpha=0.0)
    torch.testing.assert_close(zero.logits, net.classifiers[1](net.stages[1](net.trunk(xr))))
    # Inference: both branches see the same image, mixed at alpha.
    mixed = net(x, None, alpha=0.5)
    expected = 0.5 * conventional + 0.5 * net.classifiers[1](net.stages[1](net.trunk(x)))
    torch.testing.assert_close(mixed.logits, expected)


def test_single_branch_when_gbbn_is_off():
    net = _network(MethodConfig(preset="ce"))
    assert net.num_branches == 1
    out = net(torch.randn(2, 1, 8, 8))
    assert out.logits.shape == (2, 5) and len(out.features) == 1


def test_etf_classifier_is_a_seeded_buffer():
    a = _network(MethodConfig(preset="etf_dr"))
    torch.manual_seed(123)  # other random state must not change the ETF
    b = GBBNNetwork(build_backbone(ModelConfig(width=4), in_channels=1), 5, MethodConfig(preset="etf_dr"))
    assert torch.equal(a.classifiers[0].weight, b.classifiers[0].weight)
    assert "classifiers.0.weight" in dict(a.named_buffers())
    assert "classifiers.0.weight" not in dict(a.named_parameters())


@pytest.mark.parametrize("preset", ["allnc", "ce", "la", "ldam_drw", "bbn", "etf_dr"])
def test_every_preset_trains_one_step_with_finite_gradients(preset):
    cfg = load_config(None, [f"method.preset={preset}"])
    net = _network(cfg.method)
    objective = AllNCObjective(cfg.method, [50, 20, 10, 5, 2], net.feature_dim, net.num_branches, total_epochs=1)
    x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 0, 0, 1, 1, 2, 3, 4])
    xr, yr = torch.randn(8, 1, 8, 8), torch.tensor([4, 3, 2, 1, 0, 4, 3, 2])
    two_streams = net.num_branches == 2
    out = net(x, xr if two_streams else None, alpha=0.6)
    losses = objective(out, y, yr if two_streams else None, alpha=0.6, epoch=0.9)
    losses.total.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (losses.hycon.item() > 0) == (preset == "allnc")


def test_loss_based_rebalancing_needs_no_second_stream():
    cfg = load_config(None, ["method.gbbn.rebalance=logit_adjust"])
    net = _network(cfg.method)
    objective = AllNCObjective(cfg.method, [50, 20, 10, 5, 2], net.feature_dim, 2, total_epochs=1)
    out = net(torch.randn(6, 1, 8, 8), None, alpha=0.5)
    losses = objective(out, torch.tensor([0, 1, 2, 3, 4, 0]), None, alpha=0.5, epoch=0.0)
    assert torch.isfinite(losses.total)
