"""The local trainer streaming digits-LT shards written by the shard writer, against the in-memory
dataset with the same config."""

from pathlib import Path

import pytest
import torch

from allnc_dist.config import DataConfig, load_config
from allnc_dist.data import build_data
from allnc_dist.data.datasets import channel_mean_std
from allnc_dist.engine.checkpoint import load_checkpoint
from allnc_dist.engine.trainer import Trainer, train_locally
from allnc_dist.engine.local_runtime import LocalRuntime
from allnc_dist.engine.streams import ShardStreams, stream_image_shape
from allnc_dist.shards import ShardIndex, load_index
from allnc_dist.shards.statistics import shard_channel_stats
from tests.cli import allnc

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "jobs" / "configs" / "digits_lt.yaml"
# MLflow logging is test_mlflow_tracker.py's: these runs log nothing.
QUIET = ["tracking.enabled=false"]


def shard_config(shards: Path, *overrides: str):
    return load_config(CONFIG, ["data.source=shards", f"data.shards={shards}", *QUIET, *overrides])


def test_shards_hold_the_in_memory_split_and_its_statistics(digits_shards):
    data = build_data(DataConfig(name="digits_lt"))
    index = load_index(digits_shards / "train")
    assert index.class_counts == data.class_counts
    assert index.image_shape == data.image_shape
    mean, std = shard_channel_stats(index)
    raw = torch.stack([data.train_eval.raw_image(i) for i in range(len(data.train_eval))])
    expected_mean, expected_std = channel_mean_std([raw])
    assert mean == pytest.approx(expected_mean, abs=1e-6)
    assert std == pytest.approx(expected_std, abs=1e-6)


def test_trains_from_shards_as_well_as_from_memory(digits_shards, tmp_path):
    epochs = ["train.epochs=15"]  # both reach about 80 % (30 epochs: 77-79 %)
    from_memory = train_locally(load_config(CONFIG, [*QUIET, *epochs]), tmp_path / "memory")
    from_shards = train_locally(shard_config(digits_shards, *epochs), tmp_path / "shards")
    assert from_shards.report["class_counts"] == from_memory.report["class_counts"]
    assert from_shards.report["steps"] == from_memory.report["steps"]
    memory, shards = from_memory.report["metrics"], from_shards.report["metrics"]
    assert memory["acc_top1"] > 60 and shards["acc_top1"] > 60  # chance is 10 %
    # Different (but equally random) batch orders: the runs agree to within seed-to-seed spread.
    assert shards["acc_top1"] == pytest.approx(memory["acc_top1"], abs=6.0)
    assert shards["nc1"] == pytest.approx(memory["nc1"], rel=0.5)


def test_shard_run_resumes_to_the_same_weights(digits_shards, tmp_path):
    small = ["model.width=8", "train.epochs=4", "train.checkpoint_every=2", "train.eval_every=4"]
    source = ["data.source=shards", f"data.shards={digits_shards}", *QUIET, *small]
    allnc("train", "--config", CONFIG, "--run-dir", tmp_path / "straight", *source)
    crashed = allnc("train", "--config", CONFIG, "--run-dir", tmp_path / "crashy", *source,
                    check=False, fault="crash_in_checkpoint_write_at_epoch=4")
    assert crashed.returncode != 0
    allnc("train", "--run-dir", tmp_path / "crashy", "--resume")

    final, reference = load_checkpoint(tmp_path / "crashy" / "checkpoint.pt"), load_checkpoint(
        tmp_path / "straight" / "checkpoint.pt")
    # The reader's place is in the checkpoint: the end of epoch 4's pass (9 batches of 32 of the 304).
    assert final["streams"]["uniform"] == reference["streams"]["uniform"] == {"epoch": 3, "position": 288}
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_gbbn_gets_a_rebalanced_stream_from_the_same_shards(digits_shards):
    streams = ShardStreams(shard_config(digits_shards, "method.preset=allnc_paper", "method.gbbn.rebalance=reversed"))
    batch = next(iter(streams.batches(0)))
    assert batch.images_rebalanced.shape == batch.images.shape == (32, 1, 8, 8)
    # Reversed sampling draws the tail far more often than its 1 % share of the training set.
    labels = torch.cat([b.labels_rebalanced for b in streams.batches(1)])
    assert (labels == 9).float().mean() > 0.05
    assert "rebalanced" not in ShardStreams(shard_config(digits_shards, "method.preset=ce")).loaders


def test_mixed_size_sets_need_the_imagenet_crop():
    mixed = ShardIndex(root=Path("/data/inat/train"), shards=[], class_counts=[3, 1], class_names=["a", "b"],
                       image_shape=None)
    with pytest.raises(ValueError, match=r"different sizes: set data.augment='imagenet'"):
        stream_image_shape(mixed, "cifar", 224)
    assert stream_image_shape(mixed, "imagenet", 224) == (3, 224, 224)


def test_a_missing_shard_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no index.json"):
        cfg = shard_config(tmp_path / "nowhere")
        Trainer(cfg, tmp_path / "run", LocalRuntime(cfg, tmp_path / "run"))
