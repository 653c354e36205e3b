"""Sources of image files, copied byte for byte into the shards: `imagefolder_source`,
`image_list_source` (ImageNet-LT lists), `inat_source` (iNaturalist 2018 JSON), and `file_source`,
which picks one of them as the CLI's options name it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import ImageSource

# File suffix (lower-cased) -> member extension; `.jpeg` is written as `.jpg` (docs/shards.md).
MEMBER_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}


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
