"""What `write_shards` writes: ordered, labelled image sources.

A source is a list of samples in a fixed order; sample i becomes key i of its split (docs/shards.md).
Each sample has a label, an identity (what it is, for the writer's plan hash) and an encoded image,
which is produced only when the shard holding it is written, so parallel writer processes share the
PNG encoding work.

This module holds the `ImageSource` interface and `builtin_sources`: digits-LT, synthetic-LT and
CIFAR-10/100-LT, the very samples `build_data` selects for a `DataConfig` (train, test, and val when
data.val_per_class > 0), PNG-encoded from their uint8 pixels (`raw_image`). Sources of image files
are in file_sources.py.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from ..config import DataConfig
from ..data import LongTailData, build_data
from ..data.datasets import TensorImageDataset
from ..data.synthetic import SyntheticImageDataset

# Channel counts a PNG member can hold: 1 (mode L) or 3 (mode RGB).
PNG_CHANNELS = (1, 3)
# The DataConfig fields that decide which images a built-in dataset holds and what their pixels are;
# they are part of the plan, so changing any of them makes the writer redo the shards.
SAMPLE_DEFINING_FIELDS = (
    "name",
    "imbalance_ratio",
    "test_per_class",
    "num_classes",
    "max_per_class",
    "image_size",
    "channels",
    "synthetic_test_per_class",
    "seed",
)
# Select samples only when not at their default: left out of the plan then, so that shard sets written
# before the field existed keep their plan (and a resumed job its shards).
OPTIONAL_SAMPLE_DEFINING_FIELDS = ("val_per_class", "profile")


@dataclass
class ImageSource(ABC):
    """An ordered, labelled image collection; sample i is written under key i."""

    dataset: str  # the name index.json records
    labels: list[int]  # one per sample, in key order
    class_names: list[str]
    profile: dict[str, Any]  # index.json's `profile`
    image_shape: list[int] | None  # [C, H, W] when all images share it, else None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_counts(self) -> list[int]:
        return torch.bincount(torch.as_tensor(self.labels), minlength=len(self.class_names)).tolist()

    def definition(self) -> dict[str, Any]:
        """What decides the samples beyond their identities (part of the writer's plan hash)."""
        return {}

    @abstractmethod
    def identity(self, index: int) -> str:
        """A stable name of sample `index` (a relative path, or dataset/split/index)."""

    @abstractmethod
    def encoded_image(self, index: int) -> tuple[bytes, str]:
        """The image bytes of sample `index` and the member extension they go under ("png" or "jpg")."""


class RawImageDataset(Protocol):
    """A dataset that hands out its images as uint8 C x H x W."""

    def raw_image(self, index: int) -> torch.Tensor: ...


@dataclass
class RawImageSource(ImageSource):
    """One split of a built-in dataset; its uint8 images are PNG-encoded when written."""

    split: str
    images: RawImageDataset
    selection: dict[str, Any]  # `sample_selection` of the DataConfig

    def definition(self) -> dict[str, Any]:
        return self.selection

    def identity(self, index: int) -> str:
        return f"{self.dataset}/{self.split}/{index}"

    def encoded_image(self, index: int) -> tuple[bytes, str]:
        return png_bytes(self.images.raw_image(index)), "png"


def png_bytes(image: torch.Tensor) -> bytes:
    """A uint8 C x H x W image (C = 1 or 3) as PNG bytes, mode L or RGB; decoding gives the pixels back."""
    pixels = image.permute(1, 2, 0).squeeze(2).numpy()  # H x W gives mode L, H x W x 3 mode RGB
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------- built-in
def builtin_sources(cfg: DataConfig) -> dict[str, RawImageSource]:
    """The train and test splits of the dataset `cfg` names, and its val split when it has one, as
    `build_data` selects them."""
    if cfg.name == "synthetic_lt" and cfg.channels not in PNG_CHANNELS:
        raise ValueError(f"shards hold 1- or 3-channel PNG images; data.channels={cfg.channels} is neither")
    data = build_data(cfg)
    sources = {
        "train": builtin_split_source(cfg, data, "train", data.train_eval, training_profile(cfg)),
        "test": builtin_split_source(cfg, data, "test", data.test, BALANCED_PROFILE),
    }
    if data.val is not None:
        sources["val"] = builtin_split_source(cfg, data, "val", data.val, BALANCED_PROFILE)
    return sources


# The balanced test and val splits are recorded as the exponential profile at ratio 1.
BALANCED_PROFILE = {"kind": "exponential", "imbalance_ratio": 1.0}


def training_profile(cfg: DataConfig) -> dict[str, Any]:
    """The count profile of the training split, as index.json records it."""
    if cfg.profile == "imagenet_lt":
        return {"kind": cfg.profile}
    return {"kind": cfg.profile, "imbalance_ratio": cfg.imbalance_ratio}


def builtin_split_source(
    cfg: DataConfig,
    data: LongTailData,
    split: str,
    dataset: TensorImageDataset | SyntheticImageDataset,
    profile: dict[str, Any],
) -> RawImageSource:
    """One split, with the count `profile` it follows."""
    n_max = int(torch.bincount(dataset.labels).max())
    return RawImageSource(
        dataset=cfg.name,
        labels=dataset.labels.tolist(),
        class_names=list(data.class_names),
        profile={**profile, "n_max": n_max},
        image_shape=list(data.image_shape),
        split=split,
        images=dataset,
        selection=sample_selection(cfg),
    )


def sample_selection(cfg: DataConfig) -> dict[str, Any]:
    """The data config fields that select a built-in dataset's samples (part of the writer's plan)."""
    selection = cfg.model_dump(include=set(SAMPLE_DEFINING_FIELDS))
    selection.update({field: getattr(cfg, field) for field in OPTIONAL_SAMPLE_DEFINING_FIELDS
                      if getattr(cfg, field) != DataConfig.model_fields[field].default})
    return selection
