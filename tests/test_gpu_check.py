"""bench/gpu_check.sh, the prepared GPU check, in its CPU smoke mode (--quick --device cpu), so that it
works the first time someone runs it on a borrowed GPU. No timing is asserted: only that every part
left its figures (the distributed one included: Ray and DeepSpeed are installed here), the accuracy run
passed, and a missing dependency stops the check with what to install."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_check(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = ["bash", str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)


@pytest.mark.timeout(480)
def test_quick_cpu_check_fills_every_section_and_passes(tmp_path):
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("PASS: AllNC on synthetic-LT reached")
    results = json.loads((tmp_path / "gpu_check.json").read_text())

    assert results["environment"]["torch"] and results["environment"]["card"]
    assert all(dep["imports"] for dep in results["dependencies"].values() if dep["required"])
    assert results["part_exit_status"] == {"throughput": 0, "sync": 0, "accuracy": 0, "distributed": 0}
    # ray, deepspeed, mlflow and webdataset are installed here, so an eager import would show.
    assert results["optional_modules_loaded"] == []

    step = results["throughput"]
    assert [row["arch"] for row in step["rows"]] == ["resnet32", "resnet50"]
    for row in step["rows"]:
        assert row["ce_images_per_s"] > 0 and row["allnc_images_per_s"] > 0 and row["allnc_over_ce_step_time"] > 0
        assert row["ce_peak_mib"] is None  # GPU memory: measured on CUDA only

    sync = results["sync"]
    assert sync["backend"] == "gloo" and sync["world_size"] == 1 and "not bandwidth" in sync["note"]
    assert [(r["K"], r["D"], r["B"]) for r in sync["rows"]] == [(100, 64, 128), (1000, 2048, 64)]
    for row in sync["rows"]:
        assert row["all_reduce_us"] > 0 and row["all_gather_us"] > 0
        assert row["all_reduce_kib"] == row["K"] * (row["D"] + 1) * 4 / 1024  # the fused [sums | counts]
        assert row["all_gather_kib"] == row["B"] * (row["D"] + 1) * 4 / 1024  # the fused [features | label]

    accuracy = results["accuracy"]
    assert accuracy["passed"] and accuracy["top1_%"] >= accuracy["threshold_top1_%"] > 10  # above chance (K=10)
    assert "tracking.enabled=false" in accuracy["overrides"]
    assert results["verdict"] == proc.stdout.strip().splitlines()[-1]

    # The stack is installed here, so the distributed job ran: a real Ray Train worker with DeepSpeed.
    distributed = results["distributed"]
    assert "skipped" not in distributed and distributed["backend"] == "gloo" and distributed["zero_stage"] == 1
    assert distributed["epochs"] == 1 and distributed["last_epoch_images_per_s"] > 0
    assert 0 <= distributed["few_%"] <= 100 and 0 < distributed["top1_%"] <= 100

    table = (tmp_path / "gpu_check.md").read_text()
    assert "allnc_over_ce_step_time" in table and "all_gather_us" in table and "Short AllNC run" in table
    assert "**Distributed path** (`jobs/digits_lt.py --methods allnc --num-workers 1" in table
    assert table in proc.stdout  # printed, ready to paste


@pytest.mark.timeout(120)
def test_missing_dependency_stops_the_check_and_names_the_package_to_install(tmp_path):
    shadow = tmp_path / "shadow" / "yaml"  # an importable name that fails as an absent package does
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'yaml'\", name='yaml')\n")
    out = tmp_path / "out"
    proc = run_check(out, {"PYTHONPATH": str(shadow.parent)})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "MISSING required modules: yaml." in proc.stdout
    assert "-m pip install pyyaml" in proc.stdout  # the pip name, not the import name
    assert not (out / "parts" / "throughput.json").exists() and not (out / "gpu_check.json").exists()
