"""synthetic-LT: class-conditional images at any scale, generated lazily (nothing is stored but labels).

Item i of a split is rendered deterministically from (seed, split, i): its class prototype plus a
low-resolution nuisance pattern, upsampled (bilinear) to the image size, plus per-pixel noise. A
prototype is a seeded C x 4 x 4 Gaussian pattern per class, regenerated on demand, so even
ImageNet-LT's shape (1000 classes at 224 x 224; 229,853 training images under the exponential profile
at IR 256, 115,760 under data.profile=imagenet_lt) costs only the labels. The nuisance lives in the
same low-resolution space as the prototypes, so classes overlap: the task is learnable but not
trivial (with 3 channels, nearest-prototype accuracy is ~89% at K = 10).

The balanced test split and the optional balanced validation split (data.val_per_class) are drawn
like the training split, each from its own noise stream, so the three are disjoint by construction.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import DataConfig
from .datasets import ImageTransform, LongTailData, build_transform, channel_mean_std
from .profiles import long_tail_counts

Split = Literal["train", "val", "test"]

PATTERN_SIZE = 4
NUISANCE_STD = 2.0
PIXEL_NOISE_STD = 0.5
# Independent random streams: class prototypes, and the noise of each split's items.
PROTOTYPE_STREAM = 0
SPLIT_STREAMS = {"train": 1, "test": 2, "val": 3}
# uint8 encoding of the raw float pixels (shards store images as uint8): 128 + 16 x, rounded and clipped,
# covers [-8, 8) in steps of 1/16, a fine grid next to the pixel noise (std 0.5); pixel values have a
# std of about 1.8, so clipping touches about 4 in 10^5 of them.
RAW_UINT8_CENTRE = 128.0
RAW_UINT8_SCALE = 16.0
# Training items scanned (evenly spaced) to estimate the normalisation statistics; bounded so that
# building stays cheap at any dataset size.
STATS_SAMPLE_SIZE = 128


def seeded_generator(*key: int) -> torch.Generator:
    """A torch generator whose state is a well-mixed function of the integer key."""
    state = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class SyntheticImageDataset(Dataset):
    """Lazily rendered synthetic images of the given labels; see the module docstring."""

    def __init__(
        self,
        labels: torch.Tensor,
        split: Split,
        seed: int,
        image_shape: tuple[int, int, int],
        transform: ImageTransform,
    ) -> None:
        self.labels = labels
        self.split = split
        self.seed = seed
        self.image_shape = image_shape
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.render(index)), int(self.labels[index])

    def low_res_pattern(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.image_shape[0], PATTERN_SIZE, PATTERN_SIZE, generator=generator)

    def prototype(self, label: int) -> torch.Tensor:
        """The class's low-resolution prototype (C x 4 x 4)."""
        return self.low_res_pattern(seeded_generator(self.seed, PROTOTYPE_STREAM, label))

    def render(self, index: int) -> torch.Tensor:
        """The raw (un-normalised, un-augmented) float image of item `index`."""
        noise = seeded_generator(self.seed, SPLIT_STREAMS[self.split], index)
        pattern = self.prototype(int(self.labels[index])) + NUISANCE_STD * self.low_res_pattern(noise)
        image = F.interpolate(
            pattern.unsqueeze(0), size=self.image_shape[1:], mode="bilinear", align_corners=False
        )[0]
        return image + PIXEL_NOISE_STD * torch.randn(self.image_shape, generator=noise)

    def raw_image(self, index: int) -> torch.Tensor:
        """Item `index` as uint8 C x H x W (what shards store): round(128 + 16 x), clipped to 0..255."""
        scaled = self.render(index) * RAW_UINT8_SCALE + RAW_UINT8_CENTRE
        return scaled.round().clamp(0, 255).to(torch.uint8)


def estimated_channel_stats(dataset: SyntheticImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean / std over an evenly spaced subset of the split's raw images."""
    picked = torch.linspace(0, len(dataset) - 1, min(STATS_SAMPLE_SIZE, len(dataset))).round().long()
    return channel_mean_std(dataset.render(int(i)).unsqueeze(0) for i in picked.unique())


def class_sorted_labels(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))


def synthetic_class_counts(cfg: DataConfig) -> list[int]:
    """Training images per class: data.profile from data.max_per_class down."""
    return long_tail_counts(cfg.profile, cfg.max_per_class, cfg.num_classes, cfg.imbalance_ratio)


def build_synthetic_lt(cfg: DataConfig) -> LongTailData:
    image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
    class_counts = synthetic_class_counts(cfg)
    train_labels = class_sorted_labels(class_counts)
    test_labels = class_sorted_labels([cfg.synthetic_test_per_class] * cfg.num_classes)
    val_labels = class_sorted_labels([cfg.val_per_class] * cfg.num_classes)

    def dataset(labels: torch.Tensor, split: Split, transform: ImageTransform) -> SyntheticImageDataset:
        return SyntheticImageDataset(labels, split, cfg.seed, image_shape, transform)

    mean, std = estimated_channel_stats(dataset(train_labels, "train", transform=torch.nn.Identity()))
    augmented = build_transform(cfg.augment, image_shape[1:], mean, std)
    plain = build_transform("none", image_shape[1:], mean, std)
    return LongTailData(
        train=dataset(train_labels, "train", augmented),
        train_eval=dataset(train_labels, "train", plain),
        test=dataset(test_labels, "test", plain),
        train_labels=train_labels,
        class_counts=class_counts,
        class_names=[f"class_{k}" for k in range(cfg.num_classes)],
        image_shape=image_shape,
        val=dataset(val_labels, "val", plain) if cfg.val_per_class else None,
    )
