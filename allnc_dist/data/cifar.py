"""CIFAR-10-LT / CIFAR-100-LT from a local copy of the standard python version of CIFAR (never
downloaded).

Training split: per class, the first n_k images of a seeded order, n_k following the exponential
profile with n_max = the per-class size of the standard training set (5000 for CIFAR-10, 500 for
CIFAR-100). The test split is the full, balanced test set.

Validation split (data.val_per_class > 0): the first val_per_class images of each class's seeded
order in the *training* batches, held out before the profile is applied, so the training split
follows the profile from n_max = 5000 - val_per_class (CIFAR-10) or 500 - val_per_class (CIFAR-100).
With val_per_class = 0 (the default) the training split is the standard one (12,406 images for
CIFAR-10 at IR 100).
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from .datasets import LongTailData, tensor_long_tail_data
from .profiles import long_tail_counts, shuffled_class_indices, split_off_per_class, take_per_class

CIFAR_IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its files and which pickle keys hold what."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    meta_file: str
    names_key: bytes
    per_class: int  # training images per class in the standard release


CIFAR_LAYOUTS = {
    "cifar10_lt": CifarLayout(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        meta_file="batches.meta",
        names_key=b"label_names",
        per_class=5000,
    ),
    "cifar100_lt": CifarLayout(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        meta_file="meta",
        names_key=b"fine_label_names",
        per_class=500,
    ),
}


def cifar_folder(root: str | Path, layout: CifarLayout) -> Path:
    """The unpacked dataset folder under `root`; a clear error says what belongs there if it is missing."""
    folder = Path(root) / layout.folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"expected {folder} (the standard python version of {layout.title} from the CIFAR website, "
            f"unpacked); put it there or set data.root"
        )
    return folder


def read_pickle(path: Path) -> dict:
    with path.open("rb") as file:
        return pickle.load(file, encoding="bytes")


def read_split(folder: Path, files: tuple[str, ...], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N x 3 x 32 x 32) and labels of the batches in `files`, in file order."""
    batches = [read_pickle(folder / name) for name in files]
    images = torch.cat([torch.as_tensor(batch[b"data"], dtype=torch.uint8) for batch in batches])
    labels = torch.cat([torch.as_tensor(batch[label_key], dtype=torch.long) for batch in batches])
    return images.reshape(-1, *CIFAR_IMAGE_SHAPE), labels


def read_class_names(folder: Path, layout: CifarLayout) -> list[str]:
    return [name.decode() for name in read_pickle(folder / layout.meta_file)[layout.names_key]]


def train_val_split_indices(
    labels: torch.Tensor,
    num_classes: int,
    imbalance_ratio: float,
    seed: int,
    layout: CifarLayout,
    val_per_class: int,
    profile: str = "exponential",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the training batches of the long-tailed training subset and of the balanced
    validation split (empty for val_per_class = 0), held out first.

    n_max is the smallest class's size after the hold-out: 5000 - val_per_class (CIFAR-10) or
    500 - val_per_class (CIFAR-100) on the standard data, where every class is complete. Anything else
    (a partial copy) is used as it is, with a warning, since the published counts then no longer apply.
    """
    smallest_class = min(torch.bincount(labels, minlength=num_classes).tolist())
    if val_per_class >= smallest_class:
        raise ValueError(
            f"the smallest {layout.title} class has {smallest_class} training images, so "
            f"data.val_per_class={val_per_class} leaves it none to train on"
        )
    val, pools = split_off_per_class(shuffled_class_indices(labels, num_classes, seed), val_per_class)
    n_max = smallest_class - val_per_class
    if smallest_class != layout.per_class:
        warnings.warn(
            f"{layout.title} training files hold {smallest_class} images for their smallest class, not the "
            f"standard {layout.per_class}: the long-tailed profile starts at n_max={n_max}, so counts differ "
            "from the papers'",
            stacklevel=2,
        )
    return take_per_class(pools, long_tail_counts(profile, n_max, num_classes, imbalance_ratio)), val


def build_cifar_lt(cfg: DataConfig) -> LongTailData:
    layout = CIFAR_LAYOUTS[cfg.name]
    if cfg.root is None:
        raise ValueError(
            f"data.root is required for data.name={cfg.name!r}: the folder that holds {layout.folder}"
        )
    folder = cifar_folder(cfg.root, layout)
    class_names = read_class_names(folder, layout)
    train_images, train_labels = read_split(folder, layout.train_files, layout.label_key)
    test_images, test_labels = read_split(folder, layout.test_files, layout.label_key)
    keep, val = train_val_split_indices(
        train_labels, len(class_names), cfg.imbalance_ratio, cfg.seed, layout, cfg.val_per_class, cfg.profile
    )
    return tensor_long_tail_data(
        train_images[keep],
        train_labels[keep],
        test_images,
        test_labels,
        class_names,
        cfg.augment,
        val=(train_images[val], train_labels[val]) if cfg.val_per_class else None,
    )
