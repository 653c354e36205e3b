"""bench/sampler_shares.py in its smoke mode (CIFAR-100-LT only), so that it cannot rot; its figures are
exact arithmetic, so they are checked against the same shares worked out here from the counts."""

import json

import pytest

from allnc_dist.data import exponential_profile
from tests.bench_run import run_bench

CIFAR100_LT_IR100 = exponential_profile(500, 100, 100)
SPLITS = {"many": lambda n: n > 100, "medium": lambda n: 20 <= n <= 100, "few": lambda n: n < 20}


def share_of(counts: list[int], in_split, q: float) -> float:
    """100 · Σ_{k in split} n_k^q / Σ_k n_k^q, in plain Python."""
    return 100 * sum(n**q for n in counts if in_split(n)) / sum(n**q for n in counts)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("shares") / "sampler_shares.json"
    proc = run_bench("sampler_shares", "--smoke", "--out", out, timeout=300)
    assert "| profile" in proc.stdout and "reversed (BBN)" in proc.stdout
    return json.loads(out.read_text())


def test_smoke_run_covers_every_exponent_on_cifar100_lt(smoke_results):
    assert smoke_results["smoke"] is True
    assert smoke_results["profiles"] == {"CIFAR-100-LT IR 100": {
        "K": 100, "N": 10847, "n_max": 500, "n_min": 5, "classes": {"many": 35, "medium": 35, "few": 30}}}
    assert [row["q"] for row in smoke_results["rows"]] == [1.0, 0.5, 0.0, -0.5, -1.0]


def test_shares_are_the_split_sums_of_the_tempered_probabilities(smoke_results):
    for row in smoke_results["rows"]:
        for split, in_split in SPLITS.items():
            assert row[f"{split}_%"] == pytest.approx(share_of(CIFAR100_LT_IR100, in_split, row["q"]), abs=1e-9)
        assert sum(row[f"{split}_%"] for split in SPLITS) == pytest.approx(100.0)
    by_q = {row["q"]: row for row in smoke_results["rows"]}
    # Class-balanced: each split's share is its share of the classes.
    assert (by_q[0.0]["many_%"], by_q[0.0]["medium_%"], by_q[0.0]["few_%"]) == pytest.approx((35.0, 35.0, 30.0))
    # Lowering q moves the batch from Many to Few, step by step.
    few = [row["few_%"] for row in smoke_results["rows"]]
    many = [row["many_%"] for row in smoke_results["rows"]]
    assert few == sorted(few) and many == sorted(many, reverse=True)
