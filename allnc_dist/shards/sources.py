"""What `write_shards` writes: ordered, labelled image sources.

A source is a list of samples in a fixed order; sample i becomes key i of its split (docs/shards.md).
Each sample has a label, an identity (what it is, for the writer's plan hash) and an encoded image,
which is produced only when the shard holding it is written, so parallel writer processes share the
PNG encoding work.

- `builtin_sources`: digits-LT, synthetic-LT and CIFAR-10/100-LT, the very samples `build_data`
  selects for a `DataConfig` (train, test, and val when data.val_per_class > 0), PNG-encoded from
  their uint8 pixels (`raw_image`).
- `imagefolder_source`, `image_list_source` (ImageNet-LT lists), `inat_source` (iNaturalist 2018
  JSON): image files, copied byte for byte.
"""

from __future__ import annotations

import io
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from ..config import DataConfig
from ..data import LongTailData, build_data
from ..data.datasets import TensorImageDataset
from ..data.synthetic import SyntheticImageDataset

# File suffix (lower-cased) -> member extension; `.jpeg` is written as `.jpg` (docs/shards.md).
MEMBER_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}
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


@dataclass
class FileImageSource(ImageSource):
    """Image files under `image_root`, copied byte for byte."""

    image_root: Path
    paths: list[str]  # relative to image_root, POSIX form

    def identity(self, index: int) -> str:
        return self.paths[index]

    def encoded_image(self, index: int) -> tuple[bytes, str]:
        path = self.image_root / self.paths[index]
        return path.read_bytes(), MEMBER_EXTENSIONS[path.suffix.lower()]


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


# -------------------------------------------------------------------------------------------- files
def member_extension(path: str, listed_at: str) -> str:
    """The member extension of an image file; other file types are refused, naming where they come from."""
    suffix = Path(path).suffix.lower()
    if suffix not in MEMBER_EXTENSIONS:
        raise ValueError(f"{listed_at}: {path} is not a .jpg, .jpeg or .png image")
    return MEMBER_EXTENSIONS[suffix]


def require_file(image_root: Path, path: str, listed_at: str) -> None:
    if not (image_root / path).is_file():
        raise FileNotFoundError(f"{listed_at}: image file {image_root / path} does not exist")


def listed_files_source(
    dataset: str, image_root: Path, paths: list[str], labels: list[int], class_names: list[str]
) -> FileImageSource:
    """Files as they are listed: the input fixed the class counts (profile `as_listed`)."""
    return FileImageSource(
        dataset=dataset,
        labels=labels,
        class_names=class_names,
        profile={"kind": "as_listed"},
        image_shape=None,
        image_root=image_root,
        paths=paths,
    )


def imagefolder_source(root: Path) -> FileImageSource:
    """`root/<class>/**/*.{jpg,jpeg,png}`; classes sorted by name and files ordered as torchvision's
    ImageFolder orders them (other files are skipped, as there)."""
    class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not class_names:
        raise FileNotFoundError(f"{root} holds no class folders (expected {root}/<class name>/<images>)")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_paths = class_image_paths(root, name)
        if not class_paths:
            raise FileNotFoundError(f"class folder {root / name} holds no .jpg, .jpeg or .png images")
        paths += class_paths
        labels += [label] * len(class_paths)
    return listed_files_source("imagefolder", root, paths, labels, class_names)


def class_image_paths(root: Path, class_name: str) -> list[str]:
    """The class folder's image files, relative to `root`, in torchvision's walk order."""
    found = []
    for folder, _, file_names in sorted(os.walk(root / class_name, followlinks=True)):
        for file_name in sorted(file_names):
            if Path(file_name).suffix.lower() in MEMBER_EXTENSIONS:
                found.append((Path(folder) / file_name).relative_to(root).as_posix())
    return found


def image_list_source(list_file: Path, image_root: Path, class_names_file: Path | None = None) -> FileImageSource:
    """An ImageNet-LT style list, one `<path relative to image_root> <label>` per line.

    Class names are the label ids as strings, or the lines of `class_names_file` (line k names class k).
    """
    paths, labels = [], []
    for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        listed_at = f"{list_file} line {line_number}"
        path, label = parse_list_line(line, listed_at)
        member_extension(path, listed_at)
        require_file(image_root, path, listed_at)
        paths.append(path)
        labels.append(label)
    if not labels:
        raise ValueError(f"{list_file} lists no images")
    class_names = list_class_names(class_names_file, max(labels) + 1, list_file)
    return listed_files_source("imagenet_lt", image_root, paths, labels, class_names)


def parse_list_line(line: str, listed_at: str) -> tuple[str, int]:
    """`path label` (the path may hold spaces; the label is the last field)."""
    fields = line.rsplit(maxsplit=1)
    if len(fields) != 2:
        raise ValueError(f"{listed_at}: expected '<image path> <label>', got {line!r}")
    path, label = fields
    if not (label.isascii() and label.isdigit()):
        raise ValueError(f"{listed_at}: the label {label!r} is not a non-negative integer")
    return path, int(label)


def list_class_names(class_names_file: Path | None, num_labels: int, list_file: Path) -> list[str]:
    """The names file's lines, which must cover every label; label ids as strings without one."""
    if class_names_file is None:
        return [str(label) for label in range(num_labels)]
    names = [line.strip() for line in class_names_file.read_text().splitlines() if line.strip()]
    if len(names) < num_labels:
        raise ValueError(
            f"{class_names_file} names {len(names)} classes, but {list_file} uses labels up to {num_labels - 1}"
        )
    return names


def inat_source(json_file: Path, image_root: Path) -> FileImageSource:
    """iNaturalist 2018 COCO-style annotations: `images` [{id, file_name}], `annotations` [{image_id,
    category_id}], optional `categories` [{id, name}].

    Images keep the JSON's order. Labels are the category ids ranked in sorted order, which is the
    id itself for iNat 2018's contiguous ids 0..8141; class names are the categories' names (their ids,
    as strings, where no name is given).
    """
    content = json.loads(json_file.read_text())
    for field in ("images", "annotations"):
        if field not in content:
            raise ValueError(f"{json_file} has no {field!r} list; expected iNaturalist (COCO-style) annotations")
    category_of_image = image_categories(content["annotations"], json_file)
    names_by_id = {
        category["id"]: category.get("name", str(category["id"])) for category in content.get("categories", [])
    }
    category_ids = sorted(names_by_id or set(category_of_image.values()))
    label_of_category = {category_id: label for label, category_id in enumerate(category_ids)}
    paths, labels = [], []
    for image in content["images"]:
        listed_at = f"{json_file}, image id {image['id']}"
        if image["id"] not in category_of_image:
            raise ValueError(f"{listed_at}: the image has no annotation")
        category_id = category_of_image[image["id"]]
        if category_id not in label_of_category:
            raise ValueError(f"{listed_at}: category id {category_id} is not among the JSON's categories")
        member_extension(image["file_name"], listed_at)
        require_file(image_root, image["file_name"], listed_at)
        paths.append(image["file_name"])
        labels.append(label_of_category[category_id])
    class_names = [names_by_id.get(category_id, str(category_id)) for category_id in category_ids]
    return listed_files_source("inaturalist2018", image_root, paths, labels, class_names)


def image_categories(annotations: list[dict], json_file: Path) -> dict[Any, int]:
    """image id -> category id; an image annotated twice is an error."""
    category_of_image: dict[Any, int] = {}
    for annotation in annotations:
        if annotation["image_id"] in category_of_image:
            raise ValueError(f"{json_file}, image id {annotation['image_id']}: annotated more than once")
        category_of_image[annotation["image_id"]] = annotation["category_id"]
    return category_of_image


def file_source(
    imagefolder: Path | None = None,
    image_list: Path | None = None,
    inat_json: Path | None = None,
    image_root: Path | None = None,
    class_names_file: Path | None = None,
) -> FileImageSource:
    """The file source named by exactly one of `imagefolder`, `image_list` and `inat_json` (the CLI's
    options); lists and iNaturalist JSON give paths relative to `image_root`."""
    options = {"imagefolder": imagefolder, "image_list": image_list, "inat_json": inat_json}
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"name exactly one of imagefolder, image_list, inat_json; got {given or 'none'}")
    if imagefolder is not None:
        return imagefolder_source(imagefolder)
    if image_root is None:
        raise ValueError(f"{given[0]} needs an image root (--image-root), the folder its image paths are relative to")
    if image_list is not None:
        return image_list_source(image_list, image_root, class_names_file)
    return inat_source(inat_json, image_root)
