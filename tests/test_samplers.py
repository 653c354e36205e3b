"""The tempered re-balancing samplers p_k ∝ n_k^q: the probabilities by hand, the config names that
pick q, the in-memory sampler's class mix, and the re-balanced shard stream's class mix per rank."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from allnc_dist.config import GBBNConfig, load_config
from allnc_dist.data import exponential_profile, make_rebalanced_sampler
from allnc_dist.data.samplers import tempered_class_probabilities
from allnc_dist.engine.streams import uses_rebalancing_sampler
from allnc_dist.shards import RebalancedStream, ShardLoader, load_index

from shard_fixtures import long_tail_labels, make_samples, write_shard_set

COUNTS = [100, 25, 4, 1]
# p_k = n_k^q / Σ_j n_j^q for COUNTS, worked out by hand.
BY_HAND = {
    1.0: [Fraction(100, 130), Fraction(25, 130), Fraction(4, 130), Fraction(1, 130)],
    0.5: [Fraction(10, 18), Fraction(5, 18), Fraction(2, 18), Fraction(1, 18)],
    0.0: [Fraction(1, 4)] * 4,
    -1.0: [Fraction(1, 130), Fraction(4, 130), Fraction(25, 130), Fraction(100, 130)],
}
DIGITS_LIKE = exponential_profile(124, 10, 124)  # 124 -> 1, K = 10
SHARD_PROFILES = {
    "digits_lt": DIGITS_LIKE,
    "synthetic_lt": exponential_profile(100, 100, 100),  # K = 100, IR 100
}
TV_BOUND = 0.05  # the bound on a re-balanced epoch's class mix (docs/rebalanced_stream.md)


def total_variation(labels: list[int] | torch.Tensor, target: np.ndarray) -> float:
    """Total-variation distance between the labels' class frequencies and `target`."""
    empirical = np.bincount(np.asarray(labels), minlength=len(target)) / len(labels)
    return 0.5 * float(np.abs(empirical - target).sum())


def class_sorted_labels(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))


# ------------------------------------------------------------------------------------ probabilities
@pytest.mark.parametrize("q", BY_HAND)
def test_tempered_probabilities_match_the_hand_computed_ones(q: float) -> None:
    expected = torch.tensor([float(p) for p in BY_HAND[q]], dtype=torch.float64)
    assert torch.allclose(tempered_class_probabilities(COUNTS, q), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("q", [-1.0, 0.0, 0.5, 1.0])
def test_empty_classes_get_zero_probability_and_are_never_drawn(q: float) -> None:
    counts = [30, 0, 5]
    probabilities = tempered_class_probabilities(counts, q)
    assert probabilities[1] == 0 and torch.isfinite(probabilities).all()
    assert probabilities.sum().item() == pytest.approx(1.0)
    sampler = make_rebalanced_sampler(class_sorted_labels(counts), counts, q, 500, torch.Generator().manual_seed(0))
    assert 1 not in class_sorted_labels(counts)[torch.as_tensor(list(sampler))].tolist()


def test_no_class_to_draw_is_an_error() -> None:
    with pytest.raises(ValueError, match="every class is empty"):
        tempered_class_probabilities([0, 0], 0.5)


# ------------------------------------------------------------------------------------ config names
@pytest.mark.parametrize(("rebalance", "q"), [("reversed", -1.0), ("class_balanced", 0.0)])
def test_named_samplers_are_members_of_the_tempered_family(rebalance: str, q: float) -> None:
    exponent = GBBNConfig(rebalance=rebalance).sampler_exponent
    assert exponent == q
    expected = torch.tensor([float(p) for p in BY_HAND[q]], dtype=torch.float64)
    assert torch.allclose(tempered_class_probabilities(COUNTS, exponent), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("overrides", "second_sampler"),
    [
        (["method.gbbn.rebalance=tempered", "method.gbbn.sampler_q=0.5"], True),
        (["method.gbbn.rebalance=reversed"], True),
        (["method.gbbn.rebalance=class_balanced"], True),
        (["method.gbbn.rebalance=logit_adjust"], False),
        (["method.gbbn.rebalance=reweight"], False),
        (["method.gbbn.rebalance=tempered", "method.gbbn.enabled=false"], False),
    ],
)
def test_a_second_sampler_runs_exactly_when_gbbn_rebalances_by_sampler(
    overrides: list[str], second_sampler: bool
) -> None:
    # On the paper form, whose loss is plain CE, so that every re-balancing path is allowed.
    assert uses_rebalancing_sampler(load_config(None, ["method.preset=allnc_paper", *overrides])) is second_sampler


# ----------------------------------------------------------------------------------- in-memory sampler
@pytest.mark.parametrize("q", [-1.0, 0.0, 0.5])
def test_in_memory_sampler_draws_the_target_class_mix(q: float) -> None:
    labels = class_sorted_labels(DIGITS_LIKE)
    draws = 1000 * len(DIGITS_LIKE)  # independent draws: ~0.01 off p, far below how far q's mixes differ
    sampler = make_rebalanced_sampler(labels, DIGITS_LIKE, q, draws, torch.Generator().manual_seed(0))
    drawn = labels[torch.as_tensor(list(sampler))]
    assert len(drawn) == draws
    assert total_variation(drawn, tempered_class_probabilities(DIGITS_LIKE, q).numpy()) <= TV_BOUND


def test_in_memory_sampler_refuses_counts_that_do_not_match_the_labels() -> None:
    with pytest.raises(ValueError, match="do not match the labels' counts"):
        make_rebalanced_sampler(class_sorted_labels([3, 2]), [2, 3], 0.5, 10, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------- shard stream
def write_profile_shards(split_dir: Path, counts: list[int], shard_size: int = 64) -> None:
    samples = make_samples(long_tail_labels(counts), size=2)
    full, rest = divmod(len(samples), shard_size)
    write_shard_set(split_dir, samples, [shard_size] * full + ([rest] if rest else []), len(counts))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("q", [-1.0, 0.5])  # q = 0 lies between them (and runs in the in-memory test)
@pytest.mark.parametrize("profile", SHARD_PROFILES)
def test_rebalanced_stream_gives_each_of_two_ranks_its_epoch_in_the_target_mix(
    tmp_path: Path, q: float, profile: str
) -> None:
    counts = SHARD_PROFILES[profile]
    write_profile_shards(tmp_path, counts)
    index = load_index(tmp_path)
    target = tempered_class_probabilities(counts, q).numpy()
    draws = 100 * len(counts) + 7  # not a multiple of the batch size: the partial last batch counts too
    by_rank = []
    for rank in range(2):
        stream = RebalancedStream(index, q, rank, 2, samples_per_epoch=draws)
        loader = ShardLoader(stream, 64, num_workers=2, drop_last=False)
        labels = [label for _, batch_labels in loader for label in batch_labels.tolist()]
        assert len(labels) == stream.samples_per_epoch == draws
        assert np.allclose(stream.class_probabilities(), target)
        assert total_variation(labels, target) <= TV_BOUND
        by_rank.append(labels)
    assert by_rank[0] != by_rank[1]  # each rank draws its own epoch
