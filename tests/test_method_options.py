"""The method's options: one prior correction per branch, auxiliary weights that follow the branches,
the warm-up, honest seeds (train.seed moves the batch order), and NC3 as P2P defines it."""

import pytest
import torch

from allnc_dist.config import ConfigError, MethodConfig, RunConfig, load_config
from allnc_dist.data import build_data
from allnc_dist.engine.streams import InMemoryStreams
from allnc_dist.method.network import NetworkOutput
from allnc_dist.method.objective import AllNCObjective
from allnc_dist.metrics import branch_nc3, centred, class_means, nc_metrics

COUNTS = [40, 20, 10, 5]


# ------------------------------------------------------------------------- one prior correction
@pytest.mark.parametrize("overrides, named", [
    (["method.loss=la"], "method.loss='la'"),
    (["method.loss=la", "method.gbbn.rebalance=class_balanced"], "corrects for the label prior twice"),
    (["method.loss=la", "method.gbbn.rebalance=tempered", "method.gbbn.sampler_q=0.5"], "tempered"),
    (["method.loss=ldam", "method.classifier=cosine"], "method.loss='ldam'"),
    (["method.drw_start=0.8"], "method.drw_start"),
])
def test_a_sampler_branch_with_a_prior_correcting_loss_is_refused(overrides, named):
    with pytest.raises(ConfigError, match="twice|method.loss") as err:
        load_config(None, ["method.preset=allnc_paper", *overrides])  # its reversed sampler
    assert named in str(err.value)


@pytest.mark.parametrize("preset", ["la", "allnc", "etf_dr"])
def test_deferred_reweighting_is_refused_where_it_would_correct_twice_or_has_no_weights(preset):
    # Before this check the loss ignored the weights: the knob was accepted and did nothing.
    with pytest.raises(ConfigError, match="method.drw_start"):
        load_config(None, [f"method.preset={preset}", "method.drw_start=0.8"])


@pytest.mark.parametrize("overrides", [
    ["method.preset=ce", "method.drw_start=0.8"],  # CE-DRW (Cao et al. 2019)
    ["method.loss=la", "method.gbbn.rebalance=logit_adjust"],  # both branches see the uniform batch
    ["method.loss=la", "method.gbbn.rebalance=reweight"],
    ["method.loss=la", "method.gbbn.rebalance=tempered", "method.gbbn.sampler_q=1.0"],  # instance sampling
    ["method.preset=la"], ["method.preset=ldam_drw"], ["method.preset=bbn"], ["method.preset=allnc"],
])
def test_one_correction_per_branch_is_allowed(overrides):
    load_config(None, overrides)


# -------------------------------------------------------------------------- auxiliary weights
def two_branch_output(generator):
    features = [torch.randn(16, 6, generator=generator, dtype=torch.float64) for _ in range(2)]
    classifiers = [torch.randn(4, 6, generator=generator, dtype=torch.float64) for _ in range(2)]
    logits = features[0] @ classifiers[0].T + features[1] @ classifiers[1].T
    return NetworkOutput(logits, features, classifiers, [None, None])


def one_branch_view(out, branch):
    return NetworkOutput(out.features[branch] @ out.classifier_weights[branch].T, [out.features[branch]],
                         [out.classifier_weights[branch]], [None])


@pytest.mark.parametrize("branch_weights", ["equal", "alpha"])
def test_auxiliary_terms_combine_the_branches_as_configured(branch_weights):
    generator = torch.Generator().manual_seed(0)
    out = two_branch_output(generator)
    labels = torch.arange(16) % 4
    alpha = 0.3
    method = MethodConfig(aux={"branch_weights": branch_weights})
    both = AllNCObjective(method, COUNTS, 6, num_branches=2, total_epochs=1)(out, labels, labels, alpha, 0.0)
    single = MethodConfig(gbbn={"enabled": False})
    per_branch = [AllNCObjective(single, COUNTS, 6, 1, 1)(one_branch_view(out, b), labels, None, 1.0, 0.0)
                  for b in range(2)]
    weights = [0.5, 0.5] if branch_weights == "equal" else [alpha, 1 - alpha]
    for part in ("hycon", "p2p"):
        expected = sum(w * getattr(p, part) for w, p in zip(weights, per_branch))
        torch.testing.assert_close(getattr(both, part), expected)


def test_warmup_ramps_the_auxiliary_losses_from_zero():
    generator = torch.Generator().manual_seed(1)
    out = two_branch_output(generator)
    labels = torch.arange(16) % 4
    method = MethodConfig(aux={"warmup_epochs": 4.0})

    def parts(epoch):
        return AllNCObjective(method, COUNTS, 6, 2, total_epochs=10)(out, labels, labels, 0.5, epoch)

    start, middle, after = parts(0.0), parts(2.0), parts(6.0)
    torch.testing.assert_close(start.total, start.classification)
    for p, ramp in ((middle, 0.5), (after, 1.0)):
        torch.testing.assert_close(p.total, p.classification + ramp * (p.hycon + p.p2p))


# -------------------------------------------------------------------------------- honest seeds
def first_batch_labels(train_seed):
    cfg = RunConfig(data={"name": "digits_lt", "batch_size": 32}, train={"seed": train_seed},
                    method={"preset": "allnc_paper"})  # its re-balancing sampler draws a second batch
    streams = InMemoryStreams(cfg, build_data(cfg.data))
    batch = next(iter(streams.batches(0)))
    return batch.labels, batch.labels_rebalanced, streams.class_counts


def test_train_seed_changes_the_batch_order_but_not_the_split():
    labels0, rebalanced0, counts0 = first_batch_labels(0)
    again, rebalanced_again, _ = first_batch_labels(0)
    labels1, rebalanced1, counts1 = first_batch_labels(1)
    assert torch.equal(labels0, again) and torch.equal(rebalanced0, rebalanced_again)
    assert counts0 == counts1  # data.seed, unchanged, fixes the split
    assert not torch.equal(labels0, labels1)
    assert not torch.equal(rebalanced0, rebalanced1)


# ----------------------------------------------------------------------------------------- NC3
def test_branch_nc3_is_zero_when_each_centred_classifier_matches_its_centred_means():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(40) % 4
    features = [torch.randn(40, 5, generator=generator, dtype=torch.float64) for _ in range(2)]
    means = [centred(class_means(f, labels, 4)) for f in features]
    # Branch 0: W = 2 * centred means + a common shift (centring removes it): NC3 0. Branch 1: W = -means.
    classifiers = [2 * means[0] + 3.0, -means[1]]
    values = branch_nc3(class_means(torch.cat(features, dim=1), labels, 4), classifiers)
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[1] == pytest.approx(4.0)  # || -u - u ||^2 with ||u||_F = 1
    # The uncentred NC3 sees the shift the centred one removes.
    assert nc_metrics(features[0], labels, classifiers[0])["nc3"] > 0.1


def test_branch_nc3_checks_the_widths():
    with pytest.raises(ValueError, match="columns"):
        branch_nc3(torch.randn(2, 7), [torch.randn(2, 3), torch.randn(2, 3)])
