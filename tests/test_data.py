"""Long-tailed data: exact profiles, digits-LT splits, lazy synthetic-LT, local CIFAR (the samplers:
test_samplers.py)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from allnc_dist.config import DataConfig
from allnc_dist.data import build_data, exponential_profile
from allnc_dist.data.digits import digits_lt_split_indices, load_digit_images
from allnc_dist.data.profiles import imagenet_lt_profile
from allnc_dist.metrics import class_splits

CIFAR10_IR100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
FAKE_PER_CLASS = 20


# ----------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize(
    ("n_max", "num_classes", "imbalance_ratio", "total"),
    [
        (5000, 10, 100, 12406),
        (5000, 10, 50, 13996),
        (5000, 10, 10, 20431),
        (500, 100, 100, 10847),
        (500, 100, 50, 12608),
        (500, 100, 10, 19573),
    ],
)
def test_profile_sums(n_max: int, num_classes: int, imbalance_ratio: float, total: int) -> None:
    counts = exponential_profile(n_max, num_classes, imbalance_ratio)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == int(n_max / imbalance_ratio)


def test_profile_cifar10_ir100_exact() -> None:
    assert exponential_profile(5000, 10, 100) == CIFAR10_IR100


def test_imagenet_lt_profile_has_imagenet_lt_shape() -> None:
    counts = imagenet_lt_profile()
    assert len(counts) == 1000 and max(counts) == counts[0] == 1280 and min(counts) == counts[-1] == 5
    assert all(head >= tail for head, tail in zip(counts, counts[1:]))
    assert abs(sum(counts) - 115_800) <= 0.01 * 115_800
    assert {split: len(classes) for split, classes in class_splits(counts).items()} == {
        "many": 385, "medium": 479, "few": 136
    }


@pytest.mark.parametrize(("n_max", "tail"), [(1280, 5), (640, 2), (128, 1), (1, 1)])
def test_imagenet_lt_profile_scales_every_count_to_n_max(n_max: int, tail: int) -> None:
    scaled = imagenet_lt_profile(n_max)
    assert len(scaled) == 1000 and scaled[0] == n_max and scaled[-1] == tail
    assert all(head >= later for head, later in zip(scaled, scaled[1:]))
    # Each count is floored (it loses less than 1) and clamped to at least 1.
    exact = [count * n_max / 1280 for count in imagenet_lt_profile()]
    assert all(count == 1 if share < 1 else share - 1 < count <= share for count, share in zip(scaled, exact))


# ------------------------------------------------------------------------------------------- digits
def test_digits_lt_splits_disjoint_balanced_and_long_tailed() -> None:
    _, labels = load_digit_images()
    split = digits_lt_split_indices(labels, test_per_class=50, imbalance_ratio=100, seed=0)
    train, test = split.train, split.test
    assert not set(train.tolist()) & set(test.tolist())
    assert torch.bincount(labels[test], minlength=10).tolist() == [50] * 10

    smallest_pool = int(torch.bincount(labels).min()) - 50
    counts = torch.bincount(labels[train], minlength=10).tolist()
    assert counts == exponential_profile(smallest_pool, 10, 100)
    assert all(a > b for a, b in zip(counts, counts[1:]))


def test_digits_lt_data_is_normalised_and_seeded() -> None:
    data = build_data(DataConfig(name="digits_lt", augment="none", seed=3))
    assert data.image_shape == (1, 8, 8) and data.num_classes == 10
    assert data.class_counts == torch.bincount(data.train_labels, minlength=10).tolist()
    assert len(data.test) == 500

    images = torch.stack([data.train_eval[i][0] for i in range(len(data.train_eval))])
    assert images.dtype == torch.float32
    assert abs(images.mean().item()) < 1e-4 and abs(images.std().item() - 1) < 1e-2
    image, label = data.train[0]
    assert torch.equal(image, data.train_eval[0][0]) and label == int(data.train_labels[0])

    other_seed = build_data(DataConfig(name="digits_lt", seed=4))
    assert not torch.equal(other_seed.train_eval[0][0], data.train_eval[0][0])


def test_augmentation_follows_the_global_rng() -> None:
    data = build_data(DataConfig(name="digits_lt", augment="shift"))
    torch.manual_seed(0)
    first = torch.stack([data.train[i][0] for i in range(20)])
    torch.manual_seed(0)
    again = torch.stack([data.train[i][0] for i in range(20)])
    plain = torch.stack([data.train_eval[i][0] for i in range(20)])
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)


# ---------------------------------------------------------------------------------------- synthetic
def stored_tensor_elements(dataset: object) -> int:
    return sum(value.numel() for value in vars(dataset).values() if isinstance(value, torch.Tensor))


def test_synthetic_lt_at_imagenet_lt_shape_is_lazy_and_deterministic() -> None:
    cfg = DataConfig(
        name="synthetic_lt", num_classes=1000, max_per_class=1280, imbalance_ratio=256, image_size=224,
        channels=3, augment="cifar",
    )
    start = time.perf_counter()
    data = build_data(cfg)
    assert time.perf_counter() - start < 10

    assert data.class_counts[0] == 1280 and data.class_counts[-1] == 5
    assert len(data.train) == sum(data.class_counts) == 229_853
    assert len(data.test) == 1000 * cfg.synthetic_test_per_class
    assert data.train_labels.tolist() == torch.repeat_interleave(
        torch.arange(1000), torch.as_tensor(data.class_counts)
    ).tolist()
    # Nothing but the labels is held: building must not materialise any images.
    for split in (data.train, data.train_eval, data.test):
        assert stored_tensor_elements(split) <= len(split)

    last = len(data.train) - 1
    first_image, first_label = data.train_eval[0]
    last_image, last_label = data.train_eval[last]
    assert first_image.shape == last_image.shape == (3, 224, 224)
    assert (first_label, last_label) == (0, 999)
    assert torch.equal(data.train_eval[last][0], last_image)
    assert not torch.equal(data.test[0][0], first_image)


def test_synthetic_lt_takes_imagenet_lt_profile_when_asked() -> None:
    cfg = DataConfig(name="synthetic_lt", num_classes=1000, max_per_class=128, profile="imagenet_lt", image_size=8)
    data = build_data(cfg)
    assert data.class_counts == imagenet_lt_profile(128)
    assert len(data.train) == sum(imagenet_lt_profile(128))


def test_imagenet_lt_profile_needs_1000_classes() -> None:
    cfg = DataConfig(name="synthetic_lt", num_classes=100, profile="imagenet_lt", image_size=8)
    with pytest.raises(ValueError, match=r"data\.num_classes=100"):
        build_data(cfg)


def test_synthetic_lt_is_reproducible_from_the_seed() -> None:
    cfg = DataConfig(name="synthetic_lt", num_classes=10, max_per_class=50, image_size=16, augment="cifar")
    first, again = build_data(cfg), build_data(cfg)
    assert torch.equal(first.train_eval[7][0], again.train_eval[7][0])
    torch.manual_seed(1)
    augmented = first.train[7][0]
    torch.manual_seed(1)
    assert torch.equal(augmented, again.train[7][0])
    other_seed = build_data(cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(other_seed.train_eval[7][0], first.train_eval[7][0])


# -------------------------------------------------------------------------------------------- CIFAR
def write_pickle(path: Path, content: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file)


def fake_split(num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """FAKE_PER_CLASS shuffled images per class; every pixel of an image holds its label."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), FAKE_PER_CLASS))
    return np.repeat(labels[:, None], 3072, axis=1).astype(np.uint8), labels.tolist()


def write_fake_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data, labels = fake_split(10, seed=0)
    for i, (batch, batch_labels) in enumerate(zip(np.array_split(data, 5), np.array_split(labels, 5)), 1):
        write_pickle(folder / f"data_batch_{i}", {b"data": batch, b"labels": batch_labels.tolist()})
    data, labels = fake_split(10, seed=1)
    write_pickle(folder / "test_batch", {b"data": data, b"labels": labels})
    write_pickle(folder / "batches.meta", {b"label_names": [f"name{k}".encode() for k in range(10)]})


def write_fake_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("test", 1)):
        data, labels = fake_split(100, seed)
        write_pickle(folder / split, {b"data": data, b"fine_labels": labels, b"coarse_labels": labels})
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{k}".encode() for k in range(100)]})


@pytest.mark.parametrize(
    ("name", "writer", "num_classes", "first_name"),
    [("cifar10_lt", write_fake_cifar10, 10, "name0"), ("cifar100_lt", write_fake_cifar100, 100, "fine0")],
)
def test_cifar_lt_from_local_folder(
    tmp_path: Path, name: str, writer: Callable[[Path], None], num_classes: int, first_name: str
) -> None:
    writer(tmp_path)
    # The fake folder is smaller than the standard release, which is worth a warning.
    with pytest.warns(UserWarning, match=f"{FAKE_PER_CLASS} images for their smallest class, not the standard"):
        data = build_data(DataConfig(name=name, root=str(tmp_path), imbalance_ratio=10, augment="cifar"))

    assert data.class_counts == exponential_profile(FAKE_PER_CLASS, num_classes, 10)
    assert torch.bincount(data.train_labels, minlength=num_classes).tolist() == data.class_counts
    assert data.class_names[0] == first_name and len(data.class_names) == num_classes
    assert data.image_shape == (3, 32, 32)
    # Every pixel of a fake image is its label, so the images must have stayed with their labels.
    for split in (data.train_eval, data.test):
        assert torch.equal(split.images.flatten(1).amax(1).long(), split.labels)
        assert torch.equal(split.images.flatten(1).amin(1).long(), split.labels)
    assert torch.bincount(data.test.labels).tolist() == [FAKE_PER_CLASS] * num_classes
    assert data.train[0][0].shape == (3, 32, 32)


def test_cifar_missing_folder_says_what_is_expected(tmp_path: Path) -> None:
    expected = tmp_path / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError, match="data.root") as error:
        build_data(DataConfig(name="cifar10_lt", root=str(tmp_path)))
    assert f"expected {expected}" in str(error.value)
