"""The distributed engine for real: Ray Train workers (CPU, gloo) running DeepSpeed on digits-LT shards,
logging to a real `mlflow server` on 127.0.0.1.

Every fit starts real Ray Train workers and DeepSpeed engines, so the module keeps their number small:
ZeRO-1, ZeRO-2 and ZeRO-3 on 2 workers, 1 worker with twice the batch, and one run resumed across
runtimes (tests/test_cluster.py resumes a run after losing a whole node). Only
the runs whose MLflow records are checked log to MLflow.
"""

import io
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import torch
from listeners import descendants, is_loopback, listening_sockets

from allnc_dist.config import load_config
from allnc_dist.engine.checkpoint import load_checkpoint
from allnc_dist.engine.faults import INJECTED_FAULT_EXIT
from allnc_dist.engine.ray_driver import ensure_ray, fit_on_ray, ray_run_name, rendezvous_file_prefix
from allnc_dist.engine.trainer import train_locally
from allnc_dist.tracking import MlflowServer, RunDirectory
from tests.cli import allnc

# A BN-free model, no augmentation and GBBN's loss-based re-balancing (no re-balanced stream, whose
# draws depend on the rank): the batches, and so the run, depend on the global batch only. The paper
# form keeps HyCon (and its all-gathered negatives) and a last stage per branch in the run.
DETERMINISTIC = ["method.preset=allnc_paper", "model.norm=none", "model.width=8", "data.augment=none",
                 "method.gbbn.rebalance=logit_adjust",
                 "train.epochs=2", "train.eval_every=2", "train.checkpoint_every=1"]
TWO_WORKERS = ["distributed.num_workers=2", "data.batch_size=16"]  # 304 samples: 9 steps of 2 x 16 per epoch
STEPS = 18
UNTRACKED = ["tracking.enabled=false"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ensure_ray(num_cpus_needed=3)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


def tracked_by(server, experiment):
    return [f"tracking.mlflow_uri={server.url}", f"tracking.experiment={experiment}", "tracking.log_every_steps=3",
            "tracking.system_metrics_interval_s=1"]


def runs_of(server, experiment) -> list[dict]:
    experiment_id = server.get("experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
    request = urllib.request.Request(f"{server.url}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()).get("runs", [])


def history_steps(server, run_id, key) -> list[int]:
    history = server.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
    return sorted(int(m["step"]) for m in history)


def fit(shards, run_dir, *overrides):
    cfg = load_config(None, ["data.source=shards", f"data.shards={shards}", *DETERMINISTIC, *overrides])
    return fit_on_ray(cfg, run_dir)


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunDirectory(run_dir).read_metrics() if r["split"] == "train"]


@pytest.fixture(scope="module")
def zero1(digits_shards, tmp_path_factory, mlflow_server):
    run_dir = tmp_path_factory.mktemp("ray") / "zero1"
    return fit(digits_shards, run_dir, *TWO_WORKERS, "distributed.zero_stage=1", "distributed.check_consistency=true",
               "train.eval_every=1", *tracked_by(mlflow_server, "zero1"))


# The ZeRO-2 run trains AllNC with the fixed ETF classifier, so that one fit checks the stage and a
# buffer (the check covers buffers; the ETF is one, built from its seed on each rank).
@pytest.mark.parametrize("stage,overrides", [(1, []), (2, ["method.classifier=etf"])], ids=["zero1", "zero2-etf"])
def test_two_workers_hold_identical_parameters_and_class_means_after_every_step(
    stage, overrides, zero1, digits_shards, tmp_path
):
    result = zero1 if stage == 1 else fit(
        digits_shards, tmp_path / f"zero{stage}", *TWO_WORKERS, f"distributed.zero_stage={stage}", *overrides,
        "distributed.check_consistency=true", *UNTRACKED)
    report = result.report
    assert (report["workers"], report["zero_stage"], report["steps"]) == (2, stage, STEPS)
    assert report["consistent_steps"] == STEPS  # a difference on any step would have failed the run
    assert report["machine"]["packages"]["deepspeed"] == metadata.version("deepspeed")  # rank 0 described its worker
    first, second = train_losses(result.run_dir.path)
    assert second < first  # it learns


def test_the_file_the_workers_met_through_goes_when_they_stop(zero1):
    # Both workers ran on this node, so they met through a file store in its temp folder, named for the run.
    prefix = rendezvous_file_prefix(ray_run_name(zero1.run_dir.path))
    assert not list(Path(tempfile.gettempdir()).glob(f"{prefix}*"))


def test_two_workers_with_batch_b_equal_one_worker_with_batch_2b(zero1, digits_shards, tmp_path):
    single = fit(digits_shards, tmp_path / "single", "distributed.num_workers=1", "data.batch_size=32", *UNTRACKED)
    assert single.report["steps"] == zero1.report["steps"] == STEPS
    torch.testing.assert_close(torch.tensor(train_losses(single.run_dir.path)),
                               torch.tensor(train_losses(zero1.run_dir.path)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(single.evaluation.classifier, zero1.evaluation.classifier, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(single.evaluation.class_means, zero1.evaluation.class_means, rtol=1e-4, atol=1e-5)


def test_zero3_trains_allnc_as_zero1_does(zero1, digits_shards, tmp_path):
    # Every parameter partitioned (threshold 0), the classifiers that P2P reads after the forward included.
    zero3 = fit(digits_shards, tmp_path / "zero3", *TWO_WORKERS, "distributed.zero_stage=3",
                "distributed.zero3_persistence_threshold=0", *UNTRACKED)
    assert (zero3.report["zero_stage"], zero3.report["steps"]) == (3, STEPS)
    print(f"ZeRO-3 against ZeRO-1: losses {train_losses(zero3.run_dir.path)} / {train_losses(zero1.run_dir.path)}, "
          f"max |difference| classifier {(zero3.evaluation.classifier - zero1.evaluation.classifier).abs().max():.2e}")
    assert zero1.report["metrics"]["nc3"] > 0 and zero1.report["p2p_target"]  # P2P took part
    torch.testing.assert_close(torch.tensor(train_losses(zero3.run_dir.path)),
                               torch.tensor(train_losses(zero1.run_dir.path)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(zero3.evaluation.classifier, zero1.evaluation.classifier, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(zero3.evaluation.class_means, zero1.evaluation.class_means, rtol=1e-4, atol=1e-5)


def test_rank_0_logs_params_metrics_and_plots_to_the_mlflow_server(zero1, mlflow_server):
    (run,) = runs_of(mlflow_server, "zero1")
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    assert RunDirectory(zero1.run_dir.path).read_mlflow_run_id() == run_id
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["distributed.num_workers"] == "2" and params["data.batch_size"] == "16"
    assert params["method.preset"] == "allnc_paper" and params["method.hycon.weight"] == "1.0"
    for key in ("train/loss", "eval/acc_top1", "eval/acc_few", "eval/nc1", "eval/nc2_means_maxangle",
                "eval/nc2_classifier_maxangle", "eval/nc3", "eval/few_cos_classifier", "eval/few_cos_means",
                "train/images_per_s"):
        assert history_steps(mlflow_server, run_id, key) == [9, 18], key  # once per epoch
    assert history_steps(mlflow_server, run_id, "step/loss_total") == [3, 6, 9, 12, 15, 18]
    assert any(m["key"].startswith("system/") for m in run["data"]["metrics"])
    final = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert final["eval/acc_top1"] == pytest.approx(zero1.report["metrics"]["acc_top1"])

    from PIL import Image

    for name in ("heatmap_classifier.png", "heatmap_class_means.png", "per_class_accuracy.png"):
        query = urllib.parse.urlencode({"path": f"plots/{name}", "run_uuid": run_id})
        with urllib.request.urlopen(f"{mlflow_server.url}/get-artifact?{query}", timeout=10) as response:
            png = response.read()
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and min(image.size) > 200, name
        image.verify()
    query = urllib.parse.urlencode({"path": "model/model.pt", "run_uuid": run_id})
    with urllib.request.urlopen(f"{mlflow_server.url}/get-artifact?{query}", timeout=10) as response:
        model = torch.load(io.BytesIO(response.read()), weights_only=True)
    assert model["objective"]["trackers"] and all(t["step"] == STEPS for t in model["objective"]["trackers"])


def test_the_ray_engine_refuses_in_memory_data(tmp_path):
    cfg = load_config(None, ["train.epochs=1"])
    with pytest.raises(ValueError, match="streams shards"):
        fit_on_ray(cfg, tmp_path / "run")


def test_one_checkpoint_format_a_local_run_resumes_on_ray_and_a_ray_run_locally(zero1, digits_shards, tmp_path):
    """Both runtimes write the same checkpoint.pt. Epoch 1 of a local run (batch 32) continued by 2 Ray
    workers (batch 16), and epoch 1 of the Ray run continued locally, both end where the 2-worker run
    that never stopped ends (the same global batch makes the runs equivalent)."""
    local = ["data.source=shards", f"data.shards={digits_shards}", *DETERMINISTIC, "data.batch_size=32", *UNTRACKED]
    # The local run stops one step after its epoch-1 checkpoint, as a pre-empted run would.
    stopped = allnc("train", "--run-dir", tmp_path / "local", *local, check=False, fault=f"exit_at_step={STEPS // 2 + 1}")
    assert stopped.returncode == INJECTED_FAULT_EXIT, stopped.stderr
    on_ray = fit(digits_shards, tmp_path / "local-then-ray", *TWO_WORKERS, "distributed.zero_stage=1", *UNTRACKED,
                 f"train.resume_from={tmp_path / 'local' / 'checkpoint.pt'}")
    (ray_epoch_1,) = [folder.parent for folder in zero1.run_dir.path.glob("ray/**/checkpoint.pt")
                      if load_checkpoint(folder)["epoch"] == 1]
    locally = train_locally(load_config(None, [*local, f"train.resume_from={ray_epoch_1}"]), tmp_path / "ray-then-local")

    for resumed in (on_ray, locally):
        assert (resumed.report["steps"], resumed.report["restarts"]) == (STEPS, 1)
        (resume,) = [r for r in resumed.run_dir.read_metrics() if r["split"] == "resume"]
        assert (resume["epoch"], resume["step"]) == (1, STEPS // 2)
        assert [r["epoch"] for r in resumed.run_dir.read_metrics() if r["split"] == "train"] == [2]
        torch.testing.assert_close(resumed.evaluation.classifier, zero1.evaluation.classifier, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(resumed.evaluation.class_means, zero1.evaluation.class_means, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_from_another_global_batch_is_refused_by_name(zero1, digits_shards, tmp_path):
    (checkpoint,) = [path for path in zero1.run_dir.path.glob("ray/**/checkpoint.pt") if load_checkpoint(path)["epoch"] == 1]
    cfg = load_config(None, ["data.source=shards", f"data.shards={digits_shards}", *DETERMINISTIC, *UNTRACKED,
                             "data.batch_size=16", f"train.resume_from={checkpoint}"])
    with pytest.raises(ValueError, match=r"9 steps per epoch, this run has 19: resume with the same global batch"):
        train_locally(cfg, tmp_path / "other-batch")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2)")
def test_every_listener_of_a_one_node_ray_is_on_loopback(zero1, mlflow_server):
    """After the fits (workers, agents and the dashboard are up): the private Ray that `ensure_ray`
    starts for a one-node run, and its workers, which meet through a file, listen on loopback only."""
    ours = descendants(os.getpid())
    mine = [(host, port) for host, port, pids in listening_sockets() if pids & ours]
    assert len(mine) > 3, mine  # at least the GCS, the raylet, the dashboard and the MLflow server
    assert not [(host, port) for host, port in mine if not is_loopback(host)], mine
