"""The distributed engine for real: Ray Train workers (CPU, gloo) running DeepSpeed on digits-LT shards.

Every fit starts real Ray Train workers and DeepSpeed engines, so the module keeps their number small:
ZeRO-1 and ZeRO-2 on 2 workers, 1 worker with twice the batch, and one run that loses a worker.
"""

import json

import pytest
import torch

from allnc_dist.config import load_config
from allnc_dist.engine.ray_train import ensure_ray, fit_on_ray
from allnc_dist.tracking import RunDirectory

# A BN-free model, no augmentation and GBBN's loss-based re-balancing (no re-balanced stream, whose
# draws depend on the rank): the batches, and so the run, depend on the global batch only.
DETERMINISTIC = ["model.norm=none", "model.width=8", "data.augment=none", "method.gbbn.rebalance=logit_adjust",
                 "train.epochs=2", "train.eval_every=2", "train.checkpoint_every=1", "train.progress=false"]
TWO_WORKERS = ["distributed.num_workers=2", "data.batch_size=16"]  # 304 samples: 9 steps of 2 x 16 per epoch
STEPS = 18


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ensure_ray(num_cpus_needed=3)
    yield
    ray.shutdown()


def fit(shards, run_dir, *overrides):
    cfg = load_config(None, ["data.source=shards", f"data.shards={shards}", *DETERMINISTIC, *overrides])
    return fit_on_ray(cfg, run_dir)


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunDirectory(run_dir).read_metrics() if r["split"] == "train"]


@pytest.fixture(scope="module")
def zero1(digits_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ray") / "zero1"
    return fit(digits_shards, run_dir, *TWO_WORKERS, "distributed.zero_stage=1", "distributed.check_consistency=true")


@pytest.mark.parametrize("preset,stage", [("allnc", 1), ("allnc", 2), ("etf_dr", 1)])
def test_two_workers_hold_identical_parameters_and_class_means_after_every_step(
    preset, stage, zero1, digits_shards, tmp_path
):
    # The check also covers buffers: ETF + DR's fixed classifier is one, built from its seed on each rank.
    result = zero1 if (preset, stage) == ("allnc", 1) else fit(
        digits_shards, tmp_path / f"{preset}{stage}", *TWO_WORKERS, f"distributed.zero_stage={stage}",
        f"method.preset={preset}", "distributed.check_consistency=true")
    report = result.report
    assert (report["workers"], report["zero_stage"], report["steps"]) == (2, stage, STEPS)
    assert report["consistent_steps"] == STEPS  # a difference on any step would have failed the run
    first, second = train_losses(result.run_dir.path)
    assert second < first  # it learns


def test_two_workers_with_batch_b_equal_one_worker_with_batch_2b(zero1, digits_shards, tmp_path):
    single = fit(digits_shards, tmp_path / "single", "distributed.num_workers=1", "data.batch_size=32")
    assert single.report["steps"] == zero1.report["steps"] == STEPS
    torch.testing.assert_close(torch.tensor(train_losses(single.run_dir.path)),
                               torch.tensor(train_losses(zero1.run_dir.path)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(single.evaluation.classifier, zero1.evaluation.classifier, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(single.evaluation.class_means, zero1.evaluation.class_means, rtol=1e-4, atol=1e-5)


def test_a_killed_worker_resumes_from_the_last_checkpoint_inside_the_epoch(zero1, digits_shards, tmp_path):
    run_dir = tmp_path / "faulty"
    result = fit(digits_shards, run_dir, *TWO_WORKERS, "distributed.zero_stage=1", "distributed.max_failures=1",
                 "train.checkpoint_every_steps=4", "train.fail_at_step=6", "train.fail_rank=1")
    assert result.report["steps"] == STEPS

    resumes = [r for r in RunDirectory(run_dir).read_metrics() if r["split"] == "resume"]
    assert len(resumes) == 1, resumes
    resume = resumes[0]
    # Restored, not reset: the step-4 checkpoint's place in epoch 0 and the trackers' 4 updates.
    assert (resume["epoch"], resume["step"]) == (0, 4)
    assert resume["streams"]["uniform"] == {"epoch": 0, "position": 4 * 16}
    assert resume["tracker_steps"] and all(steps == 4 for steps in resume["tracker_steps"])
    # The resumed epoch read on from position 64: had any sample been read twice or skipped, the
    # weights would differ from the run that never failed.
    torch.testing.assert_close(result.evaluation.classifier, zero1.evaluation.classifier, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.evaluation.class_means, zero1.evaluation.class_means, rtol=1e-4, atol=1e-5)
    assert json.loads((run_dir / "report.json").read_text())["steps"] == STEPS


def test_the_ray_engine_refuses_in_memory_data(tmp_path):
    cfg = load_config(None, ["train.epochs=1"])
    with pytest.raises(ValueError, match="streams shards"):
        fit_on_ray(cfg, tmp_path / "run")
