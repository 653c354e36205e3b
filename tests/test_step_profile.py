"""The step profile (Fang et al. 2021's minority-collapse setting) and data.profile on every built-in
dataset that takes it."""

from __future__ import annotations

import pytest
import torch

from allnc_dist.config import DataConfig
from allnc_dist.data import build_data
from allnc_dist.data.digits import digits_lt_split_indices, load_digit_images
from allnc_dist.data.profiles import long_tail_counts, step_profile
from allnc_dist.shards.sources import training_profile


@pytest.mark.parametrize(("n_max", "num_classes", "ratio", "expected"), [
    (100, 4, 10, [100, 100, 10, 10]),
    (100, 5, 10, [100, 100, 100, 10, 10]),  # an odd K gives the majority one class more
    (124, 10, 25, [124] * 5 + [4] * 5),  # 124 / 25 = 4.96: floor
    (50, 2, 1000, [50, 1]),  # never below one image
    (500, 6, 50, [500] * 3 + [10] * 3),  # 500 / 50 is exactly 10 despite floating point
])
def test_step_profile_counts(n_max: int, num_classes: int, ratio: float, expected: list[int]) -> None:
    assert step_profile(n_max, num_classes, ratio) == expected


def test_unknown_or_misfit_profiles_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown data.profile 'pareto'"):
        long_tail_counts("pareto", 10, 10, 10)
    with pytest.raises(ValueError, match=r"data.profile='imagenet_lt' has 1000 classes, but the dataset has 10"):
        long_tail_counts("imagenet_lt", 100, 10, 10)


def test_digits_lt_takes_the_step_profile_and_keeps_its_test_split() -> None:
    _, labels = load_digit_images()
    step = digits_lt_split_indices(labels, 50, 25, seed=0, profile="step")
    exponential = digits_lt_split_indices(labels, 50, 25, seed=0)
    assert torch.bincount(labels[step.train], minlength=10).tolist() == [124] * 5 + [4] * 5
    assert torch.equal(step.test, exponential.test)
    data = build_data(DataConfig(name="digits_lt", profile="step", imbalance_ratio=25))
    assert data.class_counts == [124] * 5 + [4] * 5


def test_synthetic_lt_takes_the_step_profile() -> None:
    data = build_data(DataConfig(name="synthetic_lt", num_classes=6, max_per_class=40, imbalance_ratio=8,
                                 profile="step", image_size=8))
    assert data.class_counts == [40, 40, 40, 5, 5, 5]


def test_shard_index_records_the_profile_that_made_the_counts() -> None:
    assert training_profile(DataConfig(profile="step", imbalance_ratio=25)) == {"kind": "step", "imbalance_ratio": 25}
    assert training_profile(DataConfig()) == {"kind": "exponential", "imbalance_ratio": 100}
    assert training_profile(DataConfig(name="synthetic_lt", num_classes=1000, profile="imagenet_lt")) == {
        "kind": "imagenet_lt"}
