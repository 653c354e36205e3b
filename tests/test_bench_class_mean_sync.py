"""bench/class_mean_sync.py in its smoke mode, so that it cannot rot, and its page as the publisher
writes it. No timing is asserted (this machine is shared and noisy): only that both sync modes were
measured and the estimate states its inputs."""

import json

from tests.bench_run import publish, run_bench


def test_class_mean_sync_bench_runs_and_states_its_estimate(tmp_path):
    out = tmp_path / "class_mean_sync.json"
    run_bench("class_mean_sync", "--smoke", "--out", out)
    results = json.loads(out.read_text())

    measured = results["measured"]
    assert measured["world_size"] == 2 and measured["backend"] == "gloo"
    rows = measured["rows"]
    assert {row["mode"] for row in rows} == {"all_reduce", "all_gather"}
    assert {(row["K"], row["D"]) for row in rows} == {(10, 64), (100, 64)}
    for row in rows:
        assert row["sync_ms"] > 0 and row["update_ms"] > 0 and row["sync_%"] > 0
        assert row["auto_picks"] in ("all_reduce", "all_gather")
    assert measured["reference_step"]["ms"] > 0 and "train_step" in measured["reference_step"]["what"]

    estimate = results["estimate"]
    inputs = estimate["inputs"]
    assert {"K": 1000, "D": 2048, "B": 64, "W": 8, "bytes_per_float": 4}.items() <= inputs.items()
    assert inputs["bandwidth_gbs"] == [100.0, 12.5] and inputs["step_ms"] == 250.0
    assert "assumption" in inputs["step_ms_is"]
    assert estimate["formulas"]["all_reduce_bytes_per_sync"] == "2 * (W-1)/W * K*(D+1)*4"
    assert estimate["formulas"]["all_gather_bytes_per_sync"].startswith("(W-1)/W * W*B*(D+1)*4")
    by_mode = {(row["mode"], row["bandwidth_gbs"]): row for row in estimate["rows"]}
    assert set(by_mode) == {(m, b) for m in ("all_reduce", "all_gather") for b in (100.0, 12.5)}
    # The figures follow from the stated formulas (arithmetic, not timing).
    k, d, b, w, syncs = 1000, 2048, 64, 8, inputs["syncs_per_step"]
    assert abs(by_mode["all_reduce", 100.0]["mb_per_step"] - syncs * 2 * (w - 1) / w * k * (d + 1) * 4 / 1e6) < 1e-6
    assert abs(by_mode["all_gather", 100.0]["mb_per_step"] - syncs * (w - 1) * b * (d + 1) * 4 / 1e6) < 1e-6
    for row in estimate["rows"]:
        assert row["meets_5%"] == (row["share_%"] <= 5.0)

    publish(tmp_path, tmp_path, "class_mean_sync.md")
    page = (tmp_path / "class_mean_sync.md").read_text()
    assert "assumption, not a measurement" in page and "2 * (W-1)/W * K*(D+1)*4" in page
    assert "| all_reduce" in page and "| all_gather" in page
