"""The validation split (data.val_per_class, train.eval_split): balanced, disjoint from train and test,
absent by default, and what evaluation measures when a run selects on it (in memory and from shards)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from allnc_dist.config import ConfigError, DataConfig, load_config
from allnc_dist.data import build_data, exponential_profile
from allnc_dist.data.cifar import CIFAR_LAYOUTS, train_val_split_indices
from allnc_dist.data.digits import digits_lt_split_indices, load_digit_images
from allnc_dist.engine.evaluate import evaluate
from allnc_dist.engine.local_runtime import LocalRuntime
from allnc_dist.engine.trainer import Trainer
from allnc_dist.engine.streams import InMemoryStreams, ShardStreams
from allnc_dist.data.builtin_shards import write_builtin_shards
from allnc_dist.shards import OtherPlanError, builtin_sources, load_index, write_shards

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "jobs" / "configs" / "digits_lt.yaml"
VAL = 20
QUIET = ["tracking.enabled=false"]
SMALL_SYNTHETIC = {"name": "synthetic_lt", "num_classes": 4, "max_per_class": 12, "image_size": 8,
                   "synthetic_test_per_class": 5}


def raw_bytes(dataset) -> list[bytes]:
    return [dataset.raw_image(i).numpy().tobytes() for i in range(len(dataset))]


def label_counts(dataset, num_classes: int) -> list[int]:
    return torch.bincount(dataset.labels, minlength=num_classes).tolist()


# ------------------------------------------------------------------------------------------- digits
def test_digits_val_is_balanced_disjoint_and_comes_out_of_the_training_pool() -> None:
    _, labels = load_digit_images()
    split = digits_lt_split_indices(labels, test_per_class=50, imbalance_ratio=100, seed=0, val_per_class=VAL)
    train, val, test = (set(indices.tolist()) for indices in split)
    assert not train & val and not train & test and not val & test
    assert torch.bincount(labels[split.val], minlength=10).tolist() == [VAL] * 10
    smallest_pool = int(torch.bincount(labels).min()) - 50 - VAL
    assert torch.bincount(labels[split.train], minlength=10).tolist() == exponential_profile(smallest_pool, 10, 100)
    # Test is taken first from each class's seeded order, so holding out val leaves it as it was.
    assert torch.equal(split.test, digits_lt_split_indices(labels, 50, 100, seed=0).test)

    data = build_data(DataConfig(name="digits_lt", val_per_class=VAL))
    images, _ = load_digit_images()
    assert torch.equal(data.val.images, images[split.val]) and torch.equal(data.val.labels, labels[split.val])
    assert data.val[0][0].shape == data.image_shape


def test_digits_without_val_split_is_the_default_data() -> None:
    default = build_data(DataConfig(name="digits_lt"))
    explicit = build_data(DataConfig(name="digits_lt", val_per_class=0))
    assert default.val is None and explicit.val is None
    # The counts (304 images) of digits-LT at IR 100 from before val_per_class existed.
    assert default.class_counts == explicit.class_counts == [124, 74, 44, 26, 16, 9, 5, 3, 2, 1]
    for name in ("train_eval", "test"):
        assert torch.equal(getattr(default, name).images, getattr(explicit, name).images)
        assert torch.equal(getattr(default, name).labels, getattr(explicit, name).labels)


def test_digits_refuses_a_val_split_that_leaves_no_training_images() -> None:
    with pytest.raises(ValueError, match=r"data\.test_per_class=50 \+ data\.val_per_class=150"):
        build_data(DataConfig(name="digits_lt", val_per_class=150))


# ---------------------------------------------------------------------------------------- synthetic
def test_synthetic_val_is_balanced_and_disjoint_from_train_and_test() -> None:
    data = build_data(DataConfig(**SMALL_SYNTHETIC, val_per_class=6))
    assert len(data.val) == 4 * 6 and label_counts(data.val, 4) == [6] * 4
    val = raw_bytes(data.val)
    assert len(set(val)) == len(val)
    assert not set(val) & set(raw_bytes(data.train_eval)) and not set(val) & set(raw_bytes(data.test))


def test_synthetic_without_val_split_renders_the_default_images() -> None:
    default = build_data(DataConfig(**SMALL_SYNTHETIC))
    with_val = build_data(DataConfig(**SMALL_SYNTHETIC, val_per_class=6))
    assert default.val is None
    # The val split draws from its own stream: train and test render exactly as without it.
    assert raw_bytes(with_val.train_eval) == raw_bytes(default.train_eval)
    assert raw_bytes(with_val.test) == raw_bytes(default.test)


# -------------------------------------------------------------------------------------------- CIFAR
def test_cifar10_val_is_held_out_of_the_training_batches_before_the_profile() -> None:
    labels = torch.arange(10).repeat(5000)  # the standard training batches' labels: 5000 per class
    layout = CIFAR_LAYOUTS["cifar10_lt"]
    train, val = train_val_split_indices(labels, 10, 100.0, seed=0, layout=layout, val_per_class=100)
    assert torch.bincount(labels[val], minlength=10).tolist() == [100] * 10
    assert torch.bincount(labels[train], minlength=10).tolist() == exponential_profile(4900, 10, 100)
    assert not set(train.tolist()) & set(val.tolist())

    standard, no_val = train_val_split_indices(labels, 10, 100.0, seed=0, layout=layout, val_per_class=0)
    assert len(standard) == 12_406 and len(no_val) == 0


# ------------------------------------------------------------------------------------------- config
def test_eval_on_val_without_a_val_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.eval_split='val'.*data\.val_per_class"):
        load_config(CONFIG, ["train.eval_split=val"])
    with pytest.raises(ConfigError, match=r"data\.val_per_class: Input should be greater than or equal to 0"):
        load_config(CONFIG, ["data.val_per_class=-1"])
    with pytest.raises(ConfigError, match=r"train\.eval_split: Input should be 'test' or 'val'"):
        load_config(CONFIG, ["train.eval_split=train"])
    # Shards carry their own val/ set: checked when the streams open it.
    from_shards = load_config(CONFIG, ["train.eval_split=val", "data.source=shards", "data.shards=x"])
    assert from_shards.train.eval_split == "val"


def test_in_memory_streams_refuse_data_without_a_val_split() -> None:
    cfg = load_config(CONFIG, ["train.eval_split=val", f"data.val_per_class={VAL}"])
    with pytest.raises(ValueError, match=r"no validation split: set data\.val_per_class > 0"):
        InMemoryStreams(cfg, build_data(DataConfig(name="digits_lt")))


# -------------------------------------------------------------------------------------------- train
def test_local_trainer_with_eval_split_val_evaluates_on_the_val_split(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, [*QUIET, "model.width=8", "train.epochs=1", f"data.val_per_class={VAL}",
                               "train.eval_split=val"])
    trainer = Trainer(cfg, tmp_path / "run", LocalRuntime(cfg, tmp_path / "run"))
    result = trainer.fit()

    data = build_data(cfg.data)
    loader = lambda dataset: DataLoader(dataset, batch_size=cfg.data.batch_size)  # noqa: E731
    on_val = evaluate(trainer.model, loader(data.val), loader(data.train_eval), data.class_counts,
                      cfg.method.gbbn.test_alpha, torch.device("cpu"))
    torch.testing.assert_close(result.evaluation.per_class_accuracy, on_val.per_class_accuracy)
    assert result.report["metrics"]["acc_top1"] == pytest.approx(on_val.metrics["acc_top1"])
    # The check can tell the splits apart: the same model scores differently on the test split.
    on_test = evaluate(trainer.model, loader(data.test), loader(data.train_eval), data.class_counts,
                       cfg.method.gbbn.test_alpha, torch.device("cpu"))
    assert not torch.equal(on_test.per_class_accuracy, on_val.per_class_accuracy)
    # Every class's accuracy is a whole number of its 20 val images (test has 50 per class).
    correct = result.evaluation.per_class_accuracy * VAL / 100
    torch.testing.assert_close(correct, correct.round())


# ------------------------------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def digits_val_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-LT with a val split, written as the jobs write built-in datasets (data/builtin_shards.py)."""
    out = tmp_path_factory.mktemp("digits_val")
    return write_builtin_shards(DataConfig(name="digits_lt", val_per_class=VAL), out / "shards")


def shard_config(shards: Path, *overrides: str):
    return load_config(CONFIG, [*QUIET, "data.source=shards", f"data.shards={shards}", *overrides])


def test_builtin_sources_have_a_val_split_only_when_asked() -> None:
    assert set(builtin_sources(DataConfig(name="digits_lt"))) == {"train", "test"}
    val = builtin_sources(DataConfig(name="digits_lt", val_per_class=VAL))["val"]
    assert val.class_counts == [VAL] * 10
    assert val.profile == {"kind": "exponential", "n_max": VAL, "imbalance_ratio": 1.0}


def test_written_val_split_is_balanced_and_the_train_split_shrinks(digits_val_shards: Path) -> None:
    index = json.loads((digits_val_shards / "val" / "index.json").read_text())
    assert index["split"] == "val" and index["class_counts"] == [VAL] * 10
    assert load_index(digits_val_shards / "train").class_counts == build_data(
        DataConfig(name="digits_lt", val_per_class=VAL)).class_counts


def test_shard_streams_evaluate_on_the_val_shards(digits_val_shards: Path) -> None:
    evaluated, _ = ShardStreams(shard_config(digits_val_shards, "train.eval_split=val")).eval_loaders()
    labels = torch.cat([y for _, y in evaluated])
    assert torch.bincount(labels, minlength=10).tolist() == [VAL] * 10
    tested, _ = ShardStreams(shard_config(digits_val_shards)).eval_loaders()
    assert torch.bincount(torch.cat([y for _, y in tested]), minlength=10).tolist() == [50] * 10


def test_shard_streams_without_val_shards_say_how_to_write_them(digits_shards: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        ShardStreams(shard_config(digits_shards, "train.eval_split=val"))
    message = str(error.value)
    assert str(digits_shards / "val") in message
    assert "allnc shards" in message and "data.val_per_class" in message and "--split val" in message


def test_train_shards_of_another_val_setting_are_not_overwritten(digits_shards: Path, tmp_path: Path) -> None:
    # A train/ written without a val split holds the images val would take: the writer refuses to
    # mix it with train shards planned with val_per_class > 0.
    (tmp_path / "train").mkdir()
    shutil.copy(digits_shards / "train" / "index.json", tmp_path / "train" / "index.json")
    train = builtin_sources(DataConfig(name="digits_lt", val_per_class=VAL))["train"]
    with pytest.raises(OtherPlanError):
        write_shards(train, tmp_path, "train", 100, seed=0, progress=False)
