"""MlflowTracker against real MLflow servers (and a real SQLite store); nothing is mocked."""

from __future__ import annotations

import json
import logging
import struct
import urllib.request
import zlib
from pathlib import Path

import pytest
import torch

from allnc_dist.tracking.server import MlflowServer, free_port
from allnc_dist.tracking.mlflow_tracker import FALLBACK_NAME, MlflowTracker, flatten_config

MODULE_LOGGER = "allnc_dist.tracking.mlflow_tracker"


class Server(MlflowServer):
    """The library's private server, with the metric history the tests read."""

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        metrics = self.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
        return sorted((int(m.get("step", 0)), m["value"]) for m in metrics)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow_server"))
    yield srv
    srv.stop()


def _png(path: Path) -> Path:
    """A 2x2 RGB PNG, written by hand."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def _fallback_lines(directory: Path) -> list[dict]:
    path = directory / FALLBACK_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_flatten_config():
    flat = flatten_config({"data": {"batch_size": 128, "name": "digits_lt"}, "seed": 0, "opt": {"betas": [0.9, 0.99]},
                           "tracking": {"mlflow_uri": None}})  # fmt: skip
    assert flat == {"data.batch_size": "128", "data.name": "digits_lt", "seed": "0", "opt.betas": "[0.9, 0.99]",
                    "tracking.mlflow_uri": "None"}  # fmt: skip


@pytest.mark.timeout(120)
def test_params_metrics_artifact_reach_server(server, tmp_path):
    tracker = MlflowTracker(server.url, "exp-basic", "run-basic", tmp_path / "fb")
    run_id = tracker.start()
    assert run_id and tracker.run_id == run_id
    params = {f"p{i:03d}": i for i in range(150)} | {"long": "x" * 7000}  # > one batch, > the value limit
    tracker.log_params(params)
    for step in range(4):
        tracker.log_metrics({"split": "train", "epoch": 1, "loss": 1.0 / (step + 1), "acc": step / 10}, step=step)
    tracker.log_metrics({"grad_norm": float("nan"), "ratio": float("inf")}, step=4)  # accepted by MLflow
    tracker.log_artifact(_png(tmp_path / "curve.png"), artifact_path="plots")
    assert tracker.finish() is None
    assert not (tmp_path / "fb" / FALLBACK_NAME).exists()

    run = server.get("runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    got = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert got["p149"] == "149" and len(got) == 151 and got["long"] == "x" * 6000
    assert "split" not in {m["key"] for m in run["data"]["metrics"]}  # strings are skipped
    assert server.history(run_id, "loss") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(4)]
    assert [s for s, _ in server.history(run_id, "epoch")] == [0, 1, 2, 3]
    assert [s for s, _ in server.history(run_id, "grad_norm")] == [4]
    files = server.get("artifacts/list", run_id=run_id, path="plots").get("files", [])
    assert [(f["path"], f["is_dir"]) for f in files] == [("plots/curve.png", False)]
    assert int(files[0]["file_size"]) == (tmp_path / "curve.png").stat().st_size


@pytest.mark.timeout(120)
def test_reopen_continues_the_same_run(server, tmp_path):
    first = MlflowTracker(server.url, "exp-resume", "run-resume", tmp_path / "fb")
    run_id = first.start()
    first.log_metrics({"loss": 2.0}, step=0)
    first.log_metrics({"loss": 1.5}, step=1)
    assert first.finish(status="KILLED") is None

    second = MlflowTracker(server.url, "exp-resume", "run-resume", tmp_path / "fb", run_id=run_id)
    assert second.start() == run_id
    assert server.get("runs/get", run_id=run_id)["run"]["info"]["status"] == "RUNNING"
    second.log_metrics({"loss": 1.0}, step=2)
    second.log_metrics({"loss": 0.5}, step=3)
    assert second.finish() is None
    assert second.has_ended()
    second.finish("FAILED")  # an error after the end (a stopped sweep trial) leaves the status alone

    assert server.history(run_id, "loss") == [(0, 2.0), (1, 1.5), (2, 1.0), (3, 0.5)]
    assert server.get("runs/get", run_id=run_id)["run"]["info"]["status"] == "FINISHED"
    runs = server.get("experiments/get-by-name", experiment_name="exp-resume")["experiment"]
    found = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"{server.url}/api/2.0/mlflow/runs/search",
                data=json.dumps({"experiment_ids": [runs["experiment_id"]]}).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        ).read()
    )
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]


@pytest.mark.timeout(120)
def test_dead_server_never_raises_and_falls_back(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    fb = tmp_path / "fb"
    tracker = MlflowTracker(uri, "exp-dead", "run-dead", fb)
    with caplog.at_level(logging.WARNING, logger=MODULE_LOGGER):
        assert tracker.start() is None
        tracker.log_params({"a": 1, "b": "two"})
        for step in range(5):
            tracker.log_metrics({"loss": float(step), "split": "train"}, step=step)
        tracker.log_artifact(_png(tmp_path / "curve.png"))
        warnings = [r for r in caplog.records if r.name == MODULE_LOGGER and r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert uri in warnings[0].getMessage()
        msg = tracker.finish()
    assert msg is not None and str(fb / FALLBACK_NAME) in msg

    lines = _fallback_lines(fb)
    metric_lines = [line for line in lines if line["kind"] == "metrics"]
    assert [(m["step"], m["data"]) for m in metric_lines] == [(s, {"loss": float(s)}) for s in range(5)]
    assert [line["data"] for line in lines if line["kind"] == "params"] == [{"a": "1", "b": "two"}]
    assert [line["data"]["path"] for line in lines if line["kind"] == "artifact"] == [str(tmp_path / "curve.png")]


@pytest.mark.timeout(120)
def test_server_killed_mid_run(tmp_path, caplog):
    own = Server(tmp_path / "own_server")
    try:
        fb = tmp_path / "fb"
        tracker = MlflowTracker(own.url, "exp-kill", "run-kill", fb)
        run_id = tracker.start()
        for step in range(3):
            tracker.log_metrics({"loss": float(step)}, step=step)
        assert own.history(run_id, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]
        own.stop()
        with caplog.at_level(logging.WARNING, logger=MODULE_LOGGER):
            for step in range(3, 6):
                tracker.log_metrics({"loss": float(step)}, step=step)
            msg = tracker.finish()
        assert msg is not None and str(fb / FALLBACK_NAME) in msg
        lines = _fallback_lines(fb)
        assert [(m["step"], m["data"]) for m in lines if m["kind"] == "metrics"] == [
            (s, {"loss": float(s)}) for s in range(3, 6)
        ]
        assert [line["data"] for line in lines if line["kind"] == "status"] == [{"status": "FINISHED"}]
    finally:
        own.stop()


@pytest.mark.timeout(120)
def test_sqlite_uri_keeps_artifacts_next_to_the_db(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    db_dir = tmp_path / "store"
    db_dir.mkdir()
    uri = f"sqlite:///{db_dir / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "exp-sqlite", "run-sqlite", tmp_path / "fb")
    run_id = tracker.start()
    assert run_id
    tracker.log_params({"data.batch_size": 128})
    for step in range(3):
        tracker.log_metrics({"loss": 1.0 - step / 10}, step=step)
    tracker.log_artifact(_png(tmp_path / "curve.png"), artifact_path="plots")
    assert tracker.finish() is None

    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params == {"data.batch_size": "128"} and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    assert [p.name for p in (db_dir / "mlartifacts").rglob("curve.png")] == ["curve.png"]
    assert not (tmp_path / "cwd" / "mlruns").exists()
    assert list((tmp_path / "cwd").iterdir()) == []


def test_local_trainer_logs_to_mlflow_and_a_resumed_run_continues_the_same_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from allnc_dist.config import load_config
    from allnc_dist.engine.checkpoint import load_checkpoint
    from allnc_dist.engine.trainer import train_locally

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(Path(__file__).parents[1] / "jobs" / "configs" / "digits_lt.yaml",
                      ["model.width=8", "train.epochs=2", "train.eval_every=2", "train.checkpoint_every=1",
                       f"tracking.mlflow_uri={uri}", "tracking.experiment=trainer"])
    train_locally(cfg, tmp_path / "run")
    run_id = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["mlflow_run_id"]
    train_locally(cfg, tmp_path / "run", resume=True)  # finished: evaluates and reports again

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trainer")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    # The resume is visible in MLflow: where from, where to, and how many restarts.
    assert run.data.tags["resumed_from"] == str(tmp_path / "run" / "checkpoint.pt")
    assert run.data.tags["resumed_at"] == "epoch 2, step 18" and run.data.tags["restarts"] == "1"
    assert run.data.params["data.batch_size"] == "32" and run.data.params["method.preset"] == "allnc"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [9, 18]
    assert "eval/acc_top1" in run.data.metrics and "eval/few_cos_classifier" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run_id, "step/loss_total")] == [10]  # log_every_steps=10
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "report.json", "metrics.jsonl"}
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {
        "plots/heatmap_classifier.png", "plots/heatmap_class_means.png", "plots/per_class_accuracy.png"}
    model = torch.load(client.download_artifacts(run_id, "model/model.pt", str(tmp_path)), weights_only=True)
    assert set(model) == {"model", "objective", "class_counts", "config"} and model["class_counts"][0] > model["class_counts"][-1]
    assert not (tmp_path / "mlruns").exists()


def test_tracking_defaults_to_the_environment_or_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    from allnc_dist.tracking import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute: workers run elsewhere
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("sqlite:////data/runs.db") == "sqlite:////data/runs.db"


def test_a_run_that_stops_on_an_error_is_marked_failed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from allnc_dist.config import load_config
    from allnc_dist.engine.step import NonFiniteLossError
    from allnc_dist.engine.trainer import train_locally

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(Path(__file__).parents[1] / "jobs" / "configs" / "digits_lt.yaml",
                      ["model.width=8", "train.epochs=1", "optim.lr=1e30", "optim.warmup_epochs=0",
                       "tracking.system_metrics=false", f"tracking.mlflow_uri={uri}", "tracking.experiment=nan"])
    with pytest.raises(NonFiniteLossError):
        train_locally(cfg, tmp_path / "run")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nan").experiment_id])
    assert run.info.status == "FAILED"
