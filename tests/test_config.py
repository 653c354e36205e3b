"""Configs: every mistake fails at start-up with a message naming the field and what is allowed."""

from pathlib import Path

import pytest

from allnc_dist.cli import main
from allnc_dist.config import ConfigError, RunConfig, load_config, parse_overrides

CONFIGS = sorted((Path(__file__).parents[1] / "jobs" / "configs").glob("*.yaml"))


def test_defaults_are_allnc_as_the_sweep_chose_it_with_the_gram_gap_the_geometry_requires():
    m = RunConfig().method
    assert (m.preset, m.loss, m.hycon.weight, m.p2p.weight, m.p2p.form, m.p2p.tau) == (
        "allnc", "la", 0.0, 1.0, "contrastive_gram", 0.1)
    assert (m.class_means.beta, m.gbbn.enabled, m.gbbn.schedule, m.gbbn.rebalance, m.gbbn.shared_stage,
            m.gbbn.test_alpha, m.aux.branch_weights, m.aux.warmup_epochs) == (
        0.9, True, "parabolic", "logit_adjust", True, 0.5, "equal", 0.0)


def test_the_paper_preset_has_every_part_of_method_md():
    m = load_config(None, ["method.preset=allnc_paper"]).method
    assert (m.loss, m.hycon.weight, m.hycon.tau, m.p2p.weight, m.p2p.form, m.p2p.tau) == (
        "ce", 1.0, 0.1, 1.0, "mse_gram", 0.1)
    assert (m.gbbn.enabled, m.gbbn.rebalance, m.gbbn.shared_stage) == (True, "reversed", False)
    # A sampler on top of the default's logit adjustment would correct for the prior twice.
    with pytest.raises(ConfigError, match="prior"):
        load_config(None, ["method.gbbn.rebalance=reversed"])


def test_bad_key_names_the_field_and_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method.hycon.temperature=0.2"])
    msg = str(err.value)
    assert "method.hycon.temperature: unknown field" in msg
    assert "allowed here: negatives, projection_dim, projection_head, tau, weight" in msg


def test_bad_type_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be a valid integer.*got 'many'"):
        load_config(None, ["train.epochs=many"])


def test_out_of_range_value_names_the_field_and_the_bound():
    with pytest.raises(ConfigError, match=r"method\.class_means\.beta: Input should be less than 1 \(got 1\.5\)"):
        load_config(None, ["method.class_means.beta=1.5"])


def test_bad_choice_lists_the_allowed_values():
    allowed = "'contrastive', 'contrastive_gram' or 'mse_gram'"
    with pytest.raises(ConfigError, match=f"method.p2p.form: Input should be {allowed}"):
        load_config(None, ["method.p2p.form=cosine"])


def test_inconsistent_choices_are_refused():
    with pytest.raises(ConfigError, match="method.loss='dr'.*needs method.classifier='etf'"):
        load_config(None, ["method.loss=dr"])
    with pytest.raises(ConfigError, match="data.root is required for data.name='cifar10_lt'"):
        load_config(None, ["data.name=cifar10_lt"])


def test_presets_fill_their_fields_and_explicit_values_win():
    ce = load_config(None, ["method.preset=ce"]).method
    assert (ce.hycon.weight, ce.p2p.weight, ce.gbbn.enabled) == (0.0, 0.0, False)
    ldam = load_config(None, ["method.preset=ldam_drw"]).method
    assert (ldam.loss, ldam.classifier, ldam.drw_start) == ("ldam", "cosine", 0.8)
    bbn_la = load_config(None, ["method.preset=bbn", "method.loss=la", "method.gbbn.rebalance=logit_adjust"]).method
    assert (bbn_la.gbbn.enabled, bbn_la.loss, bbn_la.hycon.weight, bbn_la.gbbn.rebalance) == (
        True, "la", 0.0, "logit_adjust")


def test_overrides_parse_yaml_scalars_and_nest():
    assert parse_overrides(["a.b=3", "a.c=0.5", "d=true", "e=[1, 2]", "f=null"]) == {
        "a": {"b": 3, "c": 0.5}, "d": True, "e": [1, 2], "f": None}
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["epochs"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    overrides = ["data.root=/data"] if "cifar" in path.name else []
    load_config(path, overrides)


def test_cli_exits_2_with_the_message_before_any_work(capsys):
    assert main(["train", "optim.lr=-1"]) == 2
    assert "optim.lr: Input should be greater than 0" in capsys.readouterr().err




def test_an_elastic_run_keeps_its_global_batch_at_every_size():
    cfg = load_config(None, ["distributed.num_workers=4", "distributed.min_workers=2", "data.batch_size=24"])
    assert list(cfg.distributed.worker_counts()) == [2, 3, 4]
    assert [cfg.data_per_worker(w).batch_size for w in (2, 3, 4)] == [48, 32, 24]
    assert cfg.data_per_worker(4) is cfg.data
    uneven = r"global data.batch_size \(4 workers x 16 = 64\) does not split evenly over 3"
    with pytest.raises(ConfigError, match=uneven):
        load_config(None, ["distributed.num_workers=4", "distributed.min_workers=2", "data.batch_size=16"])
    uneven = r"global data.epoch_length \(3 workers x 5 = 15\) does not split evenly over 2 worker"
    with pytest.raises(ConfigError, match=uneven):
        load_config(None, ["distributed.num_workers=3", "distributed.min_workers=2", "data.batch_size=6",
                           "data.resampled=true", "data.epoch_length=5", "data.source=shards", "data.shards=x"])
    ranged = load_config(None, ["distributed.num_workers=1..2", "data.batch_size=16"]).distributed
    assert (ranged.min_workers, ranged.num_workers) == (1, 2)
    with pytest.raises(ConfigError, match=r"min_workers \(5\) is above distributed.num_workers \(4\)"):
        load_config(None, ["distributed.num_workers=4", "distributed.min_workers=5"])
