"""The benchmark scripts in a reduced "smoke" mode, so that they cannot rot. Their figures are not
asserted (this machine is shared and noisy), except where a figure is a correctness requirement."""

import json

from tests.bench_run import publish, run_bench


def test_loader_bench_runs_and_the_rebalanced_stream_meets_its_bound(tmp_path):
    run_bench("loader", "--smoke", "--out", tmp_path / "loader.json", "--work-dir", tmp_path)
    results = json.loads((tmp_path / "loader.json").read_text())
    readers = {(row["reader"], row["loader_workers"]) for row in results["throughput"]["rows"]}
    assert {("shards (streaming)", 2), ("files (map-style ImageFolder)", 2)} <= readers
    assert all(row["samples_per_s"] > 0 for row in results["throughput"]["rows"])
    # Real digits-LT and synthetic-LT shards, 100 x K draws: the bound on the class mix.
    assert {row["set"] for row in results["rebalanced_tv"]} >= {"digits-LT", "synthetic-LT"}
    assert all(row["tv_distance"] <= 0.05 for row in results["rebalanced_tv"])
    assert all(row["uss_mib"] > 0 for row in results["memory"])
    publish(tmp_path, tmp_path, "loader_benchmark.md")
    table = (tmp_path / "loader_benchmark.md").read_text()
    assert "| shards (streaming)" in table and "Memory per loader worker" in table


def test_worker_scaling_bench_runs_one_and_two_ray_workers(tmp_path):
    run_bench("worker_scaling", "--smoke", "--out", tmp_path / "scaling.json")
    results = json.loads((tmp_path / "scaling.json").read_text())
    assert [row["workers"] for row in results["rows"]] == [1, 2]
    assert all(row["steps_per_s"] > 0 for row in results["rows"])
    # One peak-memory figure per Ray Train worker of each run, and only those.
    assert [len(row["peak_rss_mib_per_worker"]) for row in results["rows"]] == [1, 2]
    assert all(mib > 0 for row in results["rows"] for mib in row["peak_rss_mib_per_worker"])
