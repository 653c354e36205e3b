"""Tiny shard sets written straight from docs/shards.md, so the readers are tested without the writer.

Samples are small random PNGs (unique pixels, so a test can tell a decoded image's key from its
pixels). A test may break a sample before writing it: replace its image bytes, or its `.cls`
content, or drop the `.cls` member (label_text=None).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


@dataclass
class FixtureSample:
    key: str
    label: int
    pixels: np.ndarray  # uint8, H x W x C
    image: bytes  # the encoded PNG, or whatever bytes a test puts in its place
    label_text: bytes | None  # the `.cls` member's content; None leaves the member out

    @property
    def chw_bytes(self) -> bytes:
        """The pixels laid out as the reader returns them (C x H x W)."""
        return np.ascontiguousarray(self.pixels.transpose(2, 0, 1)).tobytes()


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of H x W x C uint8 pixels: mode L for one channel, RGB for three."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_samples(labels: Sequence[int], channels: int = 3, size: int = 4, seed: int = 0) -> list[FixtureSample]:
    """One sample per label, keyed %09d in order, with random pixels."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, label in enumerate(labels):
        pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        samples.append(FixtureSample(f"{i:09d}", int(label), pixels, png_bytes(pixels), str(label).encode()))
    return samples


def long_tail_labels(counts: Sequence[int], seed: int = 0) -> list[int]:
    """Labels with the given per-class counts, shuffled (as the writer spreads classes over shards)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels).tolist()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, samples: Sequence[FixtureSample]) -> list[list]:
    """Write one shard; return its index.json `members`, with offsets as tarfile reads them back."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            add_member(tar, f"{sample.key}.png", sample.image)
            if sample.label_text is not None:
                add_member(tar, f"{sample.key}.cls", sample.label_text)
    with tarfile.open(path, "r") as tar:
        images = {info.name.split(".")[0]: info for info in tar.getmembers() if info.name.endswith(".png")}
    return [[s.key, s.label, images[s.key].offset_data, images[s.key].size, "png"] for s in samples]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_shard_set(
    split_dir: Path,
    samples: Sequence[FixtureSample],
    shard_sizes: Sequence[int],
    num_classes: int,
    one_shape: bool = True,
) -> dict:
    """Write `samples` in order into shards of the given sizes plus index.json; return the index.

    With one_shape=False, image_shape is null, as for file sources whose images vary in size.
    """
    if sum(shard_sizes) != len(samples):
        raise ValueError(f"shard sizes {list(shard_sizes)} do not add up to {len(samples)} samples")
    split_dir.mkdir(parents=True, exist_ok=True)
    shards, start = [], 0
    for number, size in enumerate(shard_sizes):
        name = f"train-{number:06d}.tar"
        members = write_tar(split_dir / name, samples[start : start + size])
        shards.append({"name": name, "samples": size, "sha256": file_sha256(split_dir / name), "members": members})
        start += size
    height, width, channels = samples[0].pixels.shape
    index = {
        "format": "allnc-shards",
        "writer_version": 1,
        "dataset": "synthetic_lt",
        "split": "train",
        "num_classes": num_classes,
        "class_names": [str(k) for k in range(num_classes)],
        "class_counts": np.bincount([s.label for s in samples], minlength=num_classes).tolist(),
        "profile": {"kind": "as_listed"},
        "seed": 0,
        "samples_per_shard": max(shard_sizes),
        "total_samples": len(samples),
        "image_shape": [channels, height, width] if one_shape else None,
        "plan_sha256": hashlib.sha256(b"test fixture").hexdigest(),
        "shards": shards,
    }
    (split_dir / "index.json").write_text(json.dumps(index))
    return index
