"""The local trainer end to end on digits-LT, through the `allnc` command line as users run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allnc_dist.cli import main
from allnc_dist.config import load_config
from allnc_dist.engine.checkpoint import load_checkpoint
from allnc_dist.engine.local_runtime import LocalRuntime
from allnc_dist.engine.machine import cpu_model
from allnc_dist.engine.trainer import Trainer, train_locally
from allnc_dist.engine.step import NonFiniteLossError
from tests.cli import allnc

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "jobs" / "configs" / "digits_lt.yaml"
# These runs check the run directory and checkpoints; MLflow logging is test_mlflow_tracker.py's.
UNTRACKED = ["tracking.enabled=false"]
# The paper form: the re-balanced stream, HyCon and P2P all resume.
SMALL = ["method.preset=allnc_paper", "model.width=8", "train.epochs=4", "train.checkpoint_every=2",
         "train.eval_every=2", *UNTRACKED]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "straight"
    allnc("train", "--config", CONFIG, "--run-dir", run, *SMALL)
    return run


def test_run_directory_holds_config_metrics_checkpoint_and_report(uninterrupted):
    assert (uninterrupted / "config.yaml").is_file()
    rows = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in rows if r["split"] == "eval"] == [2, 4]
    assert all(r["loss"] == pytest.approx(r["loss_classification"] + r["loss_hycon"] + r["loss_p2p"]) for r in rows
               if r["split"] == "train")
    report = json.loads((uninterrupted / "report.json").read_text())
    assert report["steps"] == load_checkpoint(uninterrupted / "checkpoint.pt")["step"] > 0
    assert report["metrics"]["acc_top1"] > 30.0  # well above the 10 % of chance after 4 epochs
    machine = report["machine"]  # the run's own process describes where it ran
    assert (machine["cpu"], machine["cpus"], machine["packages"]["torch"]) == (cpu_model(), os.cpu_count(),
                                                                              torch.__version__)
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "gpu" not in machine


def test_crash_mid_checkpoint_then_resume_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    run = tmp_path / "crashy"
    crashed = allnc("train", "--config", CONFIG, "--run-dir", run, *SMALL,
                    check=False, fault="crash_in_checkpoint_write_at_epoch=4")
    assert crashed.returncode != 0
    assert list(run.glob(".checkpoint.pt.tmp-*")), "the torn temporary file should be left behind"
    survivor = load_checkpoint(run / "checkpoint.pt")  # the epoch-2 checkpoint is intact
    assert survivor["epoch"] == 2

    resumed = allnc("train", "--run-dir", run, "--resume")
    assert f"resumed from {run / 'checkpoint.pt'} at epoch 2, step" in resumed.stdout
    final = load_checkpoint(run / "checkpoint.pt")
    reference = load_checkpoint(uninterrupted / "checkpoint.pt")
    assert (final["epoch"], final["step"]) == (reference["epoch"], reference["step"])
    # Same data order and augmentation after the restart, so the same weights and class means.
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    for got, ref in zip(final["objective"]["trackers"], reference["objective"]["trackers"]):
        torch.testing.assert_close(got["ema"], ref["ema"], rtol=1e-4, atol=1e-5)
        assert got["step"] == ref["step"]


# The refusals are checked in this process: the command line's own `main`, without a process start.
class ReportWatcher:
    """LocalRuntime that notes, at every report, which of the run's outputs are already on disk."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime, self.seen = runtime, []

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def report(self, metrics: dict, checkpoint: dict | None = None) -> None:
        folder = self.runtime.run_dir.path
        self.seen.append((metrics["epoch"], (folder / "report.json").exists(), (folder / "model.pt").exists()))
        self.runtime.report(metrics, checkpoint)


def test_the_last_epoch_is_reported_after_the_outputs_are_written(tmp_path):
    # A sweep's scheduler may stop a trial on its last report (ASHA's top rung can be max_t): the
    # trial must have written its report and model by then, and ended its MLflow run.
    cfg = load_config(CONFIG, ["model.width=8", "train.epochs=2", "train.eval_every=1", *UNTRACKED])
    watcher = ReportWatcher(LocalRuntime(cfg, tmp_path / "run"))
    Trainer(cfg, tmp_path / "run", watcher).fit()
    assert watcher.seen == [(1, False, False), (2, True, True)]


def test_a_run_folder_restored_from_a_checkpoint_copy_drops_what_came_after(tmp_path):
    # A Ray restart puts the run folder back as the checkpoint saved it; rows and files written after
    # that checkpoint (here: an epoch row, a report) go, or the resumed run would log them twice.
    from allnc_dist.tracking import RunDirectory

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text("name: x\n")
    saved = tmp_path / "checkpoint" / "outputs"
    run.copy_outputs(saved)  # the checkpoint's copy: config only, no metrics yet
    run.log({"split": "train", "epoch": 1})
    run.write_report({"steps": 9})
    run.restore_outputs(RunDirectory(saved))
    assert [path.name for path in run.outputs()] == ["config.yaml"] and run.read_metrics() == []


def test_a_new_run_never_overwrites_an_existing_one(uninterrupted, capsys):
    before = (uninterrupted / "metrics.jsonl").read_text()
    code = main(["train", "--config", str(CONFIG), "--run-dir", str(uninterrupted), *SMALL])
    assert code == 2 and "already holds a run: continue it with --resume" in capsys.readouterr().err
    assert (uninterrupted / "metrics.jsonl").read_text() == before


def test_resume_without_a_run_directory_is_a_clear_error(capsys):
    assert main(["train", "--resume"]) == 2 and "--resume needs --run-dir" in capsys.readouterr().err


def test_nan_loss_stops_with_the_step_and_the_loss_parts(tmp_path):
    cfg = load_config(CONFIG, SMALL + ["optim.lr=1e30", "optim.warmup_epochs=0"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ \(epoch [\d.]+\): total=nan"):
        train_locally(cfg, tmp_path / "nan")


def run_demo_job(out, *flags):
    # Bytes, not text: text mode would turn a progress bar's carriage returns into newlines.
    proc = subprocess.run([sys.executable, "jobs/digits_lt.py", "--out", str(out), *flags, "train.epochs=2",
                           "model.width=8", *UNTRACKED], cwd=ROOT, capture_output=True, timeout=600)
    stdout, log = proc.stdout.decode(), (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, log
    # Not a terminal: plain progress lines, and no progress bar's carriage-return fragments.
    assert "\r" not in log and "allnc: epoch 2/2" in log and "ce: epoch 2/2" in log, log
    return [line for line in stdout.splitlines() if line.startswith("|")]


def test_demo_job_in_one_process_prints_the_table_and_draws_the_heatmaps(tmp_path):
    # The same job on Ray Train workers, as the README submits it: tests/test_cluster.py.
    table = run_demo_job(tmp_path, "--local")
    header = table[0]
    for column in ("overall %", "many %", "medium %", "few %", "NC1", "NC2 means", "NC2 classifier", "NC3",
                   "few cos W", "few cos means"):
        assert column in header
    assert [line.split("|")[1].strip() for line in table[2:]] == ["AllNC", "CE"]
    for name in ("heatmap_classifier.png", "heatmap_class_means.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
