"""Map-style image datasets, their transforms, and the `LongTailData` bundle every loader returns.

Images come out as float32 C x H x W, normalised per channel with the training split's mean / std.
Random augmentation draws from torch's global RNG, so reseeding it (as the trainer does every epoch)
makes an epoch's augmentations reproducible on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

Augment = Literal["none", "shift", "cifar", "imagenet"]
ImageTransform = Callable[[torch.Tensor], torch.Tensor]

# Padding (pixels) before the random crop back to size: 1 suits 8x8 digits, 4 is the CIFAR standard.
SHIFT_PADDING = 1
CIFAR_PADDING = 4
# Chunk size when scanning an in-memory image tensor for its statistics (bounds the float copy).
STATS_CHUNK = 4096


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images scaled to [0, 1]; float images unchanged (the same rule as the transform)."""
    return v2.functional.to_dtype(images, torch.float32, scale=True)


def channel_mean_std(image_batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over all pixels of a stream of N x C x H x W batches."""
    total, total_sq, pixels = 0.0, 0.0, 0
    for batch in image_batches:
        values = to_float_images(batch).to(torch.float64)
        total = total + values.sum(dim=(0, 2, 3))
        total_sq = total_sq + values.square().sum(dim=(0, 2, 3))
        pixels += values[:, 0].numel()
    mean = total / pixels
    std = (total_sq / pixels - mean.square()).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


def build_transform(
    augment: Augment,
    image_hw: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    randaugment: bool = False,
) -> v2.Compose:
    """Training augmentation (if any) of uint8 or float images, conversion to float in [0, 1] and
    normalisation; the output is H x W (image_hw).

    'imagenet' is RandomResizedCrop(image_hw) + horizontal flip, plus RandAugment if `randaugment`.
    """
    if randaugment and augment != "imagenet":
        raise ValueError(f"randaugment goes on top of augment='imagenet', not {augment!r}")
    if augment == "none":
        augmentation = []
    elif augment == "shift":
        augmentation = [v2.RandomCrop(image_hw, padding=SHIFT_PADDING)]
    elif augment == "cifar":
        augmentation = [v2.RandomCrop(image_hw, padding=CIFAR_PADDING), v2.RandomHorizontalFlip()]
    elif augment == "imagenet":
        augmentation = [v2.RandomResizedCrop(image_hw), v2.RandomHorizontalFlip()]
        augmentation += [v2.RandAugment()] if randaugment else []
    else:
        raise ValueError(f"data.augment must be 'none', 'shift', 'cifar' or 'imagenet', got {augment!r}")
    return v2.Compose([*augmentation, *normalisation(mean, std)])


def build_eval_transform(
    augment: Augment, image_hw: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """The un-augmented counterpart of `build_transform(augment, ...)`, for evaluation.

    For 'imagenet' it is the standard resize of the shorter side to size * 256 / 224 (256 for 224),
    then CenterCrop(size), since its images come in any size; otherwise images are used as they are.
    """
    if augment != "imagenet":
        return build_transform("none", image_hw, mean, std)
    shorter_side = min(image_hw) * 256 // 224
    return v2.Compose([v2.Resize(shorter_side), v2.CenterCrop(image_hw), *normalisation(mean, std)])


def normalisation(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


class TensorImageDataset(Dataset):
    """Images held in memory (N x C x H x W, uint8 or float) with their labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: ImageTransform) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])

    def raw_image(self, index: int) -> torch.Tensor:
        """Item `index` un-normalised and un-augmented, as uint8 C x H x W (what shards store).

        uint8 images come back as stored; float images, which hold [0, 1], are scaled to 0..255 and
        rounded (half to even).
        """
        image = self.images[index]
        if image.dtype == torch.uint8:
            return image
        return (image * 255).round().clamp(0, 255).to(torch.uint8)


@dataclass
class LongTailData:
    """The splits of one long-tailed dataset, plus what the method needs to know about it."""

    train: Dataset  # item -> (float image C x H x W, int label), augmented
    train_eval: Dataset  # the same training images, not augmented (for Neural-Collapse metrics)
    test: Dataset  # balanced, not augmented
    train_labels: torch.Tensor  # (N,) long, labels of `train` in index order
    class_counts: list[int]  # training images per class, length K
    class_names: list[str]
    image_shape: tuple[int, int, int]  # (C, H, W)
    val: Dataset | None = None  # balanced, not augmented; None without a validation split

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)


def tensor_long_tail_data(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    class_names: list[str],
    augment: Augment,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LongTailData:
    """Bundle in-memory splits, normalised with the training split's statistics; `val` is the optional
    validation split's (images, labels)."""
    image_shape = tuple(train_images.shape[1:])
    mean, std = channel_mean_std(train_images.split(STATS_CHUNK))
    augmented = build_transform(augment, image_shape[1:], mean, std)
    plain = build_transform("none", image_shape[1:], mean, std)
    return LongTailData(
        train=TensorImageDataset(train_images, train_labels, augmented),
        train_eval=TensorImageDataset(train_images, train_labels, plain),
        test=TensorImageDataset(test_images, test_labels, plain),
        train_labels=train_labels,
        class_counts=torch.bincount(train_labels, minlength=len(class_names)).tolist(),
        class_names=class_names,
        image_shape=image_shape,
        val=TensorImageDataset(*val, plain) if val is not None else None,
    )
