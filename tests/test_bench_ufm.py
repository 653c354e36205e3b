"""The unconstrained-features study across imbalance ratios, in its smoke size (1 seed, 200 steps)."""

import json
import math

import pytest

from tests.bench_run import run_bench

SMOKE_RATIOS = ("1", "100")
VARIANTS = ("CE", "AllNC", "AllNC + gap", "AllNC-paper", "P2P only", "HyCon only")
KEYS = ("few_cos_classifier", "few_cos_means", "nc3", "few_self_duality")


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("ufm") / "ufm_imbalance.json"
    run_bench("ufm_study", "--imbalance-grid", "--smoke", "--out", out)
    return json.loads(out.read_text())


def test_smoke_grid_writes_every_cell_with_finite_numbers(smoke_grid):
    assert tuple(smoke_grid["ratios"]) == SMOKE_RATIOS
    assert smoke_grid["protocol"]["batch_size"] > 0 and smoke_grid["protocol_text"]
    for ratio in SMOKE_RATIOS:
        assert tuple(smoke_grid["ratios"][ratio]) == VARIANTS
        for cell in smoke_grid["ratios"][ratio].values():
            assert len(cell["per_seed"]) == 1
            for key in KEYS:
                assert math.isfinite(cell[key]["mean"]), (ratio, key)
                assert math.isfinite(cell["per_seed"][0][key]), (ratio, key)


def test_minority_collapse_needs_imbalance_and_allnc_prevents_it(smoke_grid):
    balanced, imbalanced = smoke_grid["ratios"]["1"], smoke_grid["ratios"]["100"]
    # Balanced, every variant heads for the simplex angle -1/9 among the "Few" classifier vectors.
    for name, cell in balanced.items():
        assert cell["few_cos_classifier"]["mean"] < 0.0, name
    # At IR 100 the CE minority classifiers crowd together; AllNC keeps them apart.
    assert imbalanced["CE"]["few_cos_classifier"]["mean"] > 0.5
    assert imbalanced["AllNC"]["few_cos_classifier"]["mean"] < 0.0
    assert imbalanced["AllNC + gap"]["few_cos_classifier"]["mean"] < 0.0
