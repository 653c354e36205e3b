"""The ablation job (allnc_dist/ablation.py) on digits-LT, trained locally: 2 variants x 2 seeds x 1 epoch."""

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from allnc_dist.ablation import VARIANTS, ablation_configs, ablation_table, aggregate, main
from allnc_dist.results_table import TABLE_COLUMNS, display_name
from allnc_dist.config import load_raw

CONFIG = Path(__file__).parent.parent / "jobs" / "configs" / "digits_lt.yaml"
ABLATED = ["ce", "allnc_no_gbbn"]
SEEDS = [0, 1]
EXPERIMENT = "ablation-test"


def run_job(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(CONFIG, argv)
    return code, stdout.getvalue(), stderr.getvalue()


def job_args(out: Path, tracking_uri: str, *extra: str) -> list[str]:
    return ["--local", "--seeds", str(len(SEEDS)), "--variants", ",".join(ABLATED), "--out", str(out),
            "train.epochs=1", "data.batch_size=64", "tracking.system_metrics=false",
            f"tracking.mlflow_uri={tracking_uri}", f"tracking.experiment={EXPERIMENT}", *extra]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """One finished ablation: its folder, MLflow URI, arguments and printout."""
    root = tmp_path_factory.mktemp("ablation")
    out, uri = root / "out", f"sqlite:///{root / 'mlflow.db'}"
    args = job_args(out, uri)
    code, printed, errors = run_job(args)
    assert code == 0, errors
    return {"out": out, "uri": uri, "args": args, "printed": printed}


def run_path(out: Path, variant: str, seed: int) -> Path:
    return out / variant / f"seed{seed}"


def report(out: Path, variant: str, seed: int) -> dict:
    return json.loads((run_path(out, variant, seed) / "report.json").read_text())


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The markdown table's cells by row label (the variant's display name)."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}


def test_variants_are_the_presets_the_three_ablations_then_the_study_options():
    assert list(VARIANTS)[:10] == ["ce", "la", "ldam_drw", "bbn", "etf_dr", "allnc", "allnc_paper",
                                   "allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn"]
    configs = ablation_configs(load_raw(CONFIG), list(VARIANTS), [0])
    for preset in ("ce", "la", "ldam_drw", "bbn", "etf_dr", "allnc", "allnc_paper"):
        assert configs[(preset, 0)].method.preset == preset
    parts = {name: (c.method.hycon.weight, c.method.p2p.weight, c.method.gbbn.enabled)
             for (name, _), c in configs.items() if name.startswith("allnc")}
    assert {name: parts[name] for name in ("allnc", "allnc_paper", "allnc_no_hycon", "allnc_no_p2p",
                                           "allnc_no_gbbn")} == {
        "allnc": (0.0, 1.0, True), "allnc_paper": (1.0, 1.0, True), "allnc_no_hycon": (0.0, 1.0, True),
        "allnc_no_p2p": (1.0, 0.0, True), "allnc_no_gbbn": (1.0, 1.0, False)}
    # The ablations and every study option change the paper form: both auxiliary losses and both
    # branches stay on in each option; only its options change.
    changed = [name for name in VARIANTS if name.startswith("allnc_") and name != "allnc_paper"]
    assert all(configs[(name, 0)].method.preset == "allnc_paper" for name in changed)
    options = [name for name in changed if "_no_" not in name]
    assert len(options) == 9 and all(parts[name] == (1.0, 1.0, True) for name in options)
    assert all(display_name(name) != name for name in VARIANTS)


def test_table_is_mean_and_sample_std_over_the_seeds(ablation):
    out = ablation["out"]
    markdown = (out / "ablation.md").read_text()
    rows = table_rows(markdown)
    assert list(rows) == [display_name(v) for v in ABLATED] == ["CE", "AllNC-paper \u2212 GBBN"]
    aggregates = json.loads((out / "ablation.json").read_text())["aggregates"]
    for variant in ABLATED:
        expected_cells = []
        for _, key, fmt in TABLE_COLUMNS:
            a, b = (report(out, variant, seed)["metrics"][key] for seed in SEEDS)
            mean, std = (a + b) / 2, abs(a - b) / math.sqrt(2)  # the sample std of two values
            assert aggregates[variant][key]["mean"] == pytest.approx(mean)
            assert aggregates[variant][key]["std"] == pytest.approx(std)
            expected_cells.append(f"{mean:{fmt}} \u00b1 {std:{fmt}}")
        assert rows[display_name(variant)] == expected_cells
    assert "2 seed(s) per variant" in markdown and "digits_lt, train.epochs=1" in markdown
    assert rows["CE"][0] in ablation["printed"]
    assert {"heatmap_classifier.png", "heatmap_class_means.png"} <= {p.name for p in out.iterdir()}


def test_a_single_seed_shows_the_mean_only():
    row = table_rows(ablation_table({"ce": aggregate({0: {"acc_top1": 42.0}})}))["CE"]
    assert row[0] == "42.0"


def test_seeds_change_the_training_not_the_data(ablation):
    out = ablation["out"]
    configs = [yaml.safe_load((run_path(out, "ce", seed) / "config.yaml").read_text()) for seed in SEEDS]
    assert [c["train"]["seed"] for c in configs] == SEEDS
    assert configs[0]["data"] == configs[1]["data"]
    assert report(out, "ce", 0)["class_counts"] == report(out, "ce", 1)["class_counts"]
    weights = [torch.load(run_path(out, "ce", seed) / "model.pt", weights_only=True)["model"] for seed in SEEDS]
    assert any(not torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_rerun_reuses_every_finished_run(ablation):
    out = ablation["out"]
    reports = [run_path(out, v, s) / "report.json" for v in ABLATED for s in SEEDS]
    mtimes = [p.stat().st_mtime_ns for p in reports]
    table = (out / "ablation.md").read_text()
    code, printed, errors = run_job(ablation["args"])
    assert code == 0, errors
    assert "0 run(s) trained, 4 reused" in printed
    assert [p.stat().st_mtime_ns for p in reports] == mtimes
    assert (out / "ablation.md").read_text() == table


def test_a_run_stopped_after_its_checkpoint_resumes_from_it(ablation):
    stopped = run_path(ablation["out"], "allnc_no_gbbn", 1) / "report.json"
    before = json.loads(stopped.read_text())["metrics"]
    stopped.unlink()  # as if the process died after the last checkpoint, before the report
    code, printed, errors = run_job(ablation["args"])
    assert code == 0, errors
    assert "1 run(s) trained, 3 reused" in printed
    assert json.loads(stopped.read_text())["metrics"] == pytest.approx(before)


def test_rerun_with_another_config_is_refused_before_training(ablation):
    out = ablation["out"]
    mtimes = sorted(p.stat().st_mtime_ns for p in out.rglob("report.json"))
    code, _, errors = run_job(job_args(out, ablation["uri"]) + ["train.epochs=2"])
    assert code == 2
    assert "another config (differs in train.epochs)" in errors
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("report.json")) == mtimes


def test_mlflow_holds_one_parent_run_with_every_run_nested(ablation):
    client = MlflowClient(ablation["uri"])
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == ["ablation-digits_lt"]
    parent = parents[0]
    # The children's tag is set by the trainer (LocalTrainer's parent_run_id, allnc_dist.tracking).
    children = {r.info.run_name: r.data.tags["mlflow.parentRunId"] for r in runs if r is not parent}
    assert children == {f"{v}-seed{s}": parent.info.run_id for v in ABLATED for s in SEEDS}
    aggregates = json.loads((ablation["out"] / "ablation.json").read_text())["aggregates"]
    assert parent.data.metrics["ce/acc_top1_mean"] == pytest.approx(aggregates["ce"]["acc_top1"]["mean"])
    assert parent.data.metrics["allnc_no_gbbn/nc1_std"] == pytest.approx(aggregates["allnc_no_gbbn"]["nc1"]["std"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"ablation.md", "ablation.json"} <= artifacts
    assert plots == {"plots/heatmap_classifier.png", "plots/heatmap_class_means.png"}
    assert parent.info.status == "FINISHED"


def test_unknown_variant_fails_before_any_work(tmp_path):
    out = tmp_path / "never"
    code, _, errors = run_job(["--local", "--variants", "ce,allnc_no_etf", "--out", str(out)])
    assert code == 2
    assert "allnc_no_etf" in errors and all(name in errors for name in VARIANTS)
    assert not out.exists()
