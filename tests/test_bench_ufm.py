"""The unconstrained-features studies: the imbalance grid in its smoke size (1 seed, 400 steps), and the class grid."""

import json
import math

import pytest

from tests.bench_run import run_bench

SMOKE_RATIOS = ("1", "100")
VARIANTS = ("CE", "AllNC", "AllNC without gap", "AllNC-paper", "P2P only", "HyCon only")
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
    assert imbalanced["AllNC without gap"]["few_cos_classifier"]["mean"] < 0.0


def test_a_class_grid_run_replaces_the_cells_it_ran_and_keeps_the_others(tmp_path):
    from bench.ufm_study import merged_class_grid

    def cell(value, wall_s):
        return {"few_cos_classifier": {"mean": value, "std": None, "n": 1}, "wall_s": wall_s}

    earlier = tmp_path / "ufm_classes.json"
    earlier.write_text(json.dumps({"majority_samples": 10, "classes": {"10": {
        "CE": cell(1.0, 5.0), "AllNC": cell(-0.2, 7.0), "AllNC + gap": cell(-0.1, 9.0)}}, "wall_s": 21.0}))
    new = {"majority_samples": 10, "classes": {"10": {"AllNC": cell(-0.11, 2.0)}, "1000": {"CE": cell(0.0, 3.0)}},
           "wall_s": 5.0}
    merged = merged_class_grid(earlier, new)
    # K = 10 keeps CE, takes the new AllNC cell and drops the variant the grid no longer has.
    assert merged["classes"]["10"] == {"CE": cell(1.0, 5.0), "AllNC": cell(-0.11, 2.0)}
    assert list(merged["classes"]) == ["10", "1000"] and merged["classes"]["1000"] == {"CE": cell(0.0, 3.0)}
    assert merged["wall_s"] == 10.0  # the cells kept, not every run's time


def test_the_class_grid_records_each_cell_at_two_checkpoints(tmp_path):
    out = tmp_path / "ufm_classes.json"
    run_bench("ufm_study", "--class-grid", "--classes", "10", "--seeds", "1", "--steps", "60",
              "--variants", "CE,AllNC", "--out", out)
    cells = json.loads(out.read_text())["classes"]["10"]
    assert list(cells) == ["CE", "AllNC"]
    for cell in cells.values():
        assert cell["protocol"]["steps"] == 60 and cell["simplex_cosine"] == pytest.approx(-1 / 9)
        # The geometry at step 40 and at step 60: the drift is the gap between the two, for the one seed.
        run = cell["per_seed"][0]
        assert run["previous_checkpoint"]["step"] == 40
        drift = cell["max_drift_last_third"]["few_cos_classifier"]
        assert drift == pytest.approx(abs(run["few_cos_classifier"] - run["previous_checkpoint"]["few_cos_classifier"]))
        assert 0 < cell["few_norm_ratio_classifier"]["mean"] < 10


def test_a_class_count_without_its_own_steps_needs_steps(tmp_path):
    proc = run_bench("ufm_study", "--class-grid", "--classes", "50", "--out", tmp_path / "grid.json", status=2)
    assert "--classes 50" in proc.stderr and "give --steps" in proc.stderr
    assert not (tmp_path / "grid.json").exists()
