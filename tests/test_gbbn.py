"""The GBBN network and its cumulative schedules, and the losses it feeds."""

import pytest
import torch

from allnc_dist.config import GBBNConfig, MethodConfig, ModelConfig, load_config
from allnc_dist.method.gbbn import cumulative_alpha
from allnc_dist.method.network import BranchedNetwork
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
    return BranchedNetwork(build_backbone(ModelConfig(width=4), in_channels=1), k, method)


def test_alpha_mixes_the_branch_logits():
    net = _network(MethodConfig(preset="allnc_paper")).eval()  # a last stage per branch
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
    b = BranchedNetwork(build_backbone(ModelConfig(width=4), in_channels=1), 5, MethodConfig(preset="etf_dr"))
    assert torch.equal(a.classifiers[0].weight, b.classifiers[0].weight)
    assert "classifiers.0.weight" in dict(a.named_buffers())
    assert "classifiers.0.weight" not in dict(a.named_parameters())


@pytest.mark.parametrize("preset", ["allnc", "allnc_paper", "ce", "la", "ldam_drw", "bbn", "etf_dr"])
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
    assert (losses.hycon.item() > 0) == (preset == "allnc_paper")  # the default's sweep turned HyCon off


def test_loss_based_rebalancing_needs_no_second_stream():
    cfg = load_config(None, ["method.gbbn.rebalance=logit_adjust"])
    net = _network(cfg.method)
    objective = AllNCObjective(cfg.method, [50, 20, 10, 5, 2], net.feature_dim, 2, total_epochs=1)
    out = net(torch.randn(6, 1, 8, 8), None, alpha=0.5)
    losses = objective(out, torch.tensor([0, 1, 2, 3, 4, 0]), None, alpha=0.5, epoch=0.0)
    assert torch.isfinite(losses.total)


# ------------------------------------------------------------------------ light bilateral network
def _parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shared_stage_forward_shapes_with_a_sampler_and_by_loss():
    net = _network(load_config(None, ["method.gbbn.shared_stage=true"]).method)
    x, xr = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    sampled = net(x, xr, alpha=0.5)  # a re-balancing sampler: the two batches in one pass, then split
    assert [f.shape for f in sampled.features] == [(3, net.feature_dim)] * 2
    assert sampled.logits.shape == (3, 5)
    by_loss = net(x, None, alpha=0.5)  # re-balancing by loss, or inference: one pass, the same features
    assert len(by_loss.features) == 2 and by_loss.features[0] is by_loss.features[1]
    assert by_loss.logits.shape == (3, 5)


def test_shared_stage_mixes_both_classifiers_on_the_stage_features():
    net = _network(load_config(None, ["method.gbbn.shared_stage=true"]).method).eval()
    x, xr = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    features = net.stages[0](net.trunk(x))
    expected = 0.3 * net.classifiers[0](features) + 0.7 * net.classifiers[1](features)
    torch.testing.assert_close(net(x, None, alpha=0.3).logits, expected)
    torch.testing.assert_close(net(x, xr, alpha=1.0).logits, net.classifiers[0](features))
    rebalanced = net.classifiers[1](net.stages[0](net.trunk(xr)))
    torch.testing.assert_close(net(x, xr, alpha=0.0).logits, rebalanced)


def test_shared_stage_costs_one_branch_plus_one_classifier():
    shared = _network(load_config(None, ["method.gbbn.shared_stage=true"]).method)
    one_branch = _network(MethodConfig(preset="ce"))
    assert (shared.num_branches, len(shared.stages)) == (2, 1)
    extra_classifier = _parameter_count(shared.classifiers[1])
    assert extra_classifier == 5 * shared.feature_dim
    assert _parameter_count(shared) == _parameter_count(one_branch) + extra_classifier


@pytest.mark.parametrize("branch", [0, 1])
@pytest.mark.parametrize("sampler", [True, False])
def test_gradients_reach_the_shared_stage_from_each_classifier(branch, sampler):
    net = _network(load_config(None, ["method.gbbn.shared_stage=true"]).method)
    x = torch.randn(4, 1, 8, 8)
    out = net(x, torch.randn(4, 1, 8, 8) if sampler else None, alpha=0.5)
    net.classifiers[branch](out.features[branch]).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.stages[0].parameters())


# ----------------------------------------------------------------------------------------- ETF + DR
def test_etf_features_pass_a_batchnorm_and_reach_negative_cosines():
    net = _network(MethodConfig(preset="etf_dr"))
    stage_norms = [m for m in net.stages[0].modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(stage_norms) == 1 and stage_norms[0].affine and stage_norms[0].num_features == net.feature_dim
    features = net(torch.randn(16, 1, 8, 8)).features[0]
    assert (features < 0).any()
    unit = torch.nn.functional.normalize(features, dim=1)
    assert (unit @ unit.T < 0).any()


@pytest.mark.parametrize("preset", ["allnc", "allnc_paper", "ce", "ldam_drw"])
def test_learned_classifiers_see_the_pooled_features_without_batchnorm(preset):
    net = _network(MethodConfig(preset=preset))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())
    assert all((f >= 0).all() for f in net(torch.randn(4, 1, 8, 8)).features)


# ----------------------------------------------------------------------------------- HyCon's head
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_projection_head_maps_features_to_the_projection_width(head):
    cfg = load_config(None, ["method.preset=allnc_paper", "method.hycon.projection_dim=7",
                             f"method.hycon.projection_head={head}"])
    net = _network(cfg.method)
    out = net(torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), alpha=0.5)
    assert all(p(f).shape == (4, 7) for p, f in zip(out.projections, out.features))


def test_linear_head_is_bias_free_and_mlp_head_is_built_only_when_asked():
    linear = _network(load_config(None, ["method.preset=allnc_paper", "method.hycon.projection_dim=7"]).method)
    assert all(isinstance(p, torch.nn.Linear) and p.bias is None for p in linear.projections)
    mlp = _network(load_config(None, ["method.preset=allnc_paper", "method.hycon.projection_dim=7",
                                      "method.hycon.projection_head=mlp"]).method)
    layers = [[type(m) for m in p] for p in mlp.projections]
    assert layers == [[torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]] * 2
    assert mlp.projections[0][0].weight.shape == (mlp.feature_dim, mlp.feature_dim)
    no_head = _network(load_config(None, ["method.preset=allnc_paper", "method.hycon.projection_head=mlp"]).method)
    assert not no_head.has_projection and all(p is None for p in no_head(torch.randn(2, 1, 8, 8)).projections)


def test_the_mlp_head_trains_with_the_objective():
    cfg = load_config(None, ["method.preset=allnc_paper", "method.hycon.projection_dim=7",
                             "method.hycon.projection_head=mlp"])
    net = _network(cfg.method)
    objective = AllNCObjective(cfg.method, [50, 20, 10, 5, 2], net.feature_dim, net.num_branches, total_epochs=1)
    y = torch.tensor([0, 0, 1, 2, 3, 4])
    out = net(torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8), alpha=0.5)
    objective(out, y, y.flip(0), alpha=0.5, epoch=0.0).total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.projections.parameters())
