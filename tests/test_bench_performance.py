"""bench/step_time.py in its smoke mode, and the publisher's docs/PERFORMANCE.md on its output and on
copies of the committed result JSONs. Figures are not asserted (this machine is shared and noisy): only that every
part is measured and every section and target line is written."""

import json
import shutil
from pathlib import Path

import pytest

from tests.bench_run import ROOT, publish, run_bench

RESULTS = ROOT / "bench" / "results"
SHAPES = ("small_cnn digits 8x8 b32", "resnet32 cifar 32x32 b128")
CONFIGS = ("ce", "ce+hycon", "ce+p2p", "ce+gbbn_sampler", "ce+gbbn_loss", "allnc", "allnc-hycon", "allnc-p2p",
           "allnc-gbbn", "allnc_gbbn_loss", "allnc trackers alone", "allnc objective alone")
PATH_SHAPES = ("resnet32 cifar 32x32 b128", "resnet50 64x64 b16 K=1000", "small_cnn 8x8 b256 K=1000")
# GBBN path -> training images per step, in batches: the re-balancing sampler adds a second batch.
GBBN_PATHS = {"ce": 1, "allnc": 2, "allnc_gbbn_loss": 1, "allnc_shared_loss": 1, "allnc_shared_sampler": 2,
              "allnc_default": 1, "allnc_one_branch_cosine": 1, "la_cosine": 1, "allnc_chosen_100": 1}
PARTS = ("class-mean trackers", "HyCon", "P2P", "GBBN by sampler", "GBBN by loss", "AllNC objective")
SECTIONS = ("## Targets", "## Step time: AllNC against CE, by part", "## Where the AllNC step's time goes",
            "### Hot-path changes", "## Class-mean sync", "## Loader throughput", "## Worker scaling",
            "## GPU (bench/gpu_check.sh)")
TARGET_LINES = ("- AllNC step time ≤ 1.15 × CE at CIFAR shape: ",
                "- Class-mean sync ≤ 5 % of step time at ImageNet-LT scale",
                "- Loader: streaming throughput ≥ map-style baseline: ")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder: a smoke step_time.json, plus copies of the committed JSONs of the other benches."""
    folder = tmp_path_factory.mktemp("results")
    run_bench("step_time", "--smoke", "--out", folder / "step_time.json", timeout=300)
    for name in ("class_mean_sync.json", "loader.json", "worker_scaling.json"):
        shutil.copyfile(RESULTS / name, folder / name)
    return folder


def report(results: Path, docs: Path) -> str:
    publish(results, docs, "PERFORMANCE.md")
    return (docs / "PERFORMANCE.md").read_text()


def test_step_time_smoke_measures_every_part_for_both_shapes(results):
    step = json.loads((results / "step_time.json").read_text())
    assert step["smoke"] and tuple(step["shapes"]) == SHAPES
    for shape in step["shapes"].values():
        assert set(shape["configs"]) == set(CONFIGS)
        assert all(row["step_ms"] > 0 and row["ratio_vs_ce"] > 0 for row in shape["configs"].values())
        assert shape["configs"]["ce"]["flops"] > 0 and shape["objective_aten_ops"] > 0
        for part in PARTS:
            assert sum(row["part"].startswith(part) for row in shape["parts"]) == 1, part
    assert step["profile"]["top_ops"]


def test_step_time_smoke_measures_every_gbbn_path_per_step_and_per_image(results):
    step = json.loads((results / "step_time.json").read_text())
    assert tuple(step["gbbn_paths"]) == PATH_SHAPES
    for shape in step["gbbn_paths"].values():
        assert set(shape["paths"]) == set(GBBN_PATHS)
        for path, batches in GBBN_PATHS.items():
            row = shape["paths"][path]
            assert row["images_per_step"] == batches * shape["batch"]
            assert row["ratio_vs_ce_per_step"] > 0 and row["flops_vs_ce_per_step"] > 0
            assert row["ratio_vs_ce_per_image"] * batches == pytest.approx(row["ratio_vs_ce_per_step"])
            assert row["flops_vs_ce_per_image"] * batches == pytest.approx(row["flops_vs_ce_per_step"])


def test_report_writes_every_section_and_target(results, tmp_path):
    doc = report(results, tmp_path)
    for heading in SECTIONS:
        assert heading in doc, heading
    for line in TARGET_LINES:
        assert line in doc, line
    assert "python -m bench.step_time && python -m bench.publish" in doc
    assert "(smoke run: not a measurement)" in doc
    assert "not run yet: no GPU was available" in doc


def test_report_fills_the_gpu_section_and_tolerates_absent_inputs(results, tmp_path):
    partial = tmp_path / "results"
    partial.mkdir()
    shutil.copyfile(results / "step_time.json", partial / "step_time.json")
    # What bench/gpu_check_report.py writes: the JSON with its verdict and the markdown of every part.
    (partial / "gpu_check.json").write_text(json.dumps({"verdict": "PASS: AllNC on synthetic-LT reached 61.0 %"}))
    (partial / "gpu_check.md").write_text("### GPU check: NVIDIA H200\n\n| shape | allnc_over_ce_step_time |\n"
                                           "|---|---|\n| resnet32 cifar | 1.8 |\n")
    doc = report(partial, tmp_path)
    assert "### GPU check: NVIDIA H200" in doc and "| resnet32 cifar | 1.8 |" in doc
    assert "Check: PASS: AllNC on synthetic-LT reached 61.0 %" in doc
    assert "not run yet" not in doc
    for name in ("class_mean_sync.json", "loader.json", "worker_scaling.json"):
        assert f"`{name}` is absent" in doc
