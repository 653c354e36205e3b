"""Where an engine's batches come from: the uniform stream, paired with the re-balanced stream when
GBBN re-balances by sampler, plus the evaluation loaders: the split `train.eval_split` names (test, or
the validation split that sweeps select on) and the training split without augmentation.

`InMemoryStreams` serves a map-style `LongTailData`; `ShardStreams` streams a shard set written by
`allnc shards` (docs/shards.md). Each epoch's draws are seeded from (train.seed, epoch), so a resumed run
replays exactly what an uninterrupted run draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import RunConfig
from ..data import LongTailData, make_rebalanced_sampler
from ..data.datasets import build_eval_transform, build_transform
from ..shards import RebalancedStream, ShardIndex, ShardLoader, ShardStream, load_index
from ..shards.index import INDEX_FILE
from ..shards.statistics import shard_channel_stats
from .step import Batch


def uses_rebalancing_sampler(cfg: RunConfig) -> bool:
    return cfg.method.gbbn.enabled and cfg.method.gbbn.sampler_exponent is not None


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class TrainingStreams(Protocol):
    class_counts: list[int]
    image_shape: tuple[int, int, int]
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterator[Batch]: ...

    def eval_loaders(self) -> tuple[Iterable, Iterable]:
        """(the train.eval_split split, training split without augmentation), each yielding (images, labels)."""
        ...

    def state_dict(self) -> dict:
        """Where the streams stand inside an epoch (for a checkpoint)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Continue inside an epoch, from a checkpoint written there (by any number of ranks)."""
        ...


PADDING_LABEL = -1  # an evaluation sample read only to keep the ranks' batch counts equal


def marked_padding(loader: ShardLoader, padding: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, the labels of the last `padding` samples of the pass set to PADDING_LABEL."""
    last = len(loader) - 1
    for i, (images, labels) in enumerate(loader):
        if i == last and padding:
            labels = labels.clone()
            labels[-padding:] = PADDING_LABEL
        yield images, labels


class InMemoryStreams:
    def __init__(self, cfg: RunConfig, data: LongTailData) -> None:
        self.cfg, self.data = cfg, data
        self.class_counts = list(data.class_counts)
        self.image_shape = data.image_shape
        self.eval_split = in_memory_eval_split(cfg, data)
        n, b = len(data.train), cfg.data.batch_size
        self.drop_last = n >= b
        self.steps_per_epoch = n // b if self.drop_last else 1

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.cfg.data.batch_size, num_workers=self.cfg.data.loader_workers,
                          **kwargs)

    def batches(self, epoch: int) -> Iterator[Batch]:
        # train.seed, not data.seed: seeds differ in batch order while the split stays the same.
        seed = epoch_seed(self.cfg.train.seed, epoch)
        uniform = self._loader(self.data.train, shuffle=True, drop_last=self.drop_last,
                               generator=torch.Generator().manual_seed(seed))
        if not uses_rebalancing_sampler(self.cfg):
            return (Batch(x, y) for x, y in uniform)
        sampler = make_rebalanced_sampler(self.data.train_labels, self.class_counts,
                                          self.cfg.method.gbbn.sampler_exponent, len(self.data.train),
                                          torch.Generator().manual_seed(seed + 7919))
        rebalanced = self._loader(self.data.train, sampler=sampler, drop_last=self.drop_last)
        return (Batch(x, y, xr, yr) for (x, y), (xr, yr) in zip(uniform, rebalanced))

    def eval_loaders(self) -> tuple[DataLoader, DataLoader]:
        return self._loader(self.eval_split), self._loader(self.data.train_eval)

    def state_dict(self) -> dict:
        return {}  # each epoch is drawn afresh from (seed, epoch)

    def load_state_dict(self, state: dict) -> None:
        raise ValueError("this checkpoint was written inside an epoch, and only a run that streams shards resumes "
                         "there: set data.source=shards and data.shards to the shards that run read")


class ShardStreams:
    """This rank's part of `<data.shards>/train`, with the re-balanced stream drawn from the same shards
    when GBBN re-balances by sampler, and the whole of `<data.shards>/test` (or `<data.shards>/val`, with
    train.eval_split=val) for evaluation.

    Every rank yields the same number of batches per epoch (see `ShardStream`). The images are
    normalised with statistics read from the training shards, identical on every rank.
    """

    def __init__(self, cfg: RunConfig, rank: int = 0, world_size: int = 1,
                 verify_shards: Callable[[list[ShardIndex]], None] | None = None) -> None:
        """`verify_shards`: checks the sets' shards before anything reads them (the Ray runtime shares the
        work among the ranks); without it, each shard is checked in this process when first read."""
        d = self.data_cfg = cfg.data
        self.rank, self.world_size = rank, world_size
        root = Path(d.shards)
        self.train_index = load_index(root / "train")
        self.eval_index = load_index(root / "test" if cfg.train.eval_split == "test" else val_split_dir(root))
        check_same_classes(self.train_index, self.eval_index)
        if d.verify_checksums and verify_shards is not None:
            verify_shards([self.train_index, self.eval_index])
        self.class_counts = list(self.train_index.class_counts)
        self.image_shape = stream_image_shape(self.train_index, d.augment, d.image_size)
        mean, std = shard_channel_stats(self.train_index, d.on_bad_sample, d.verify_checksums)
        image_hw = self.image_shape[1:]
        train_transform = build_transform(d.augment, image_hw, mean, std, d.randaugment)
        self.eval_transform = build_eval_transform(d.augment, image_hw, mean, std)
        uniform = ShardStream(self.train_index, rank, world_size, cfg.train.seed, train_transform, d.resampled,
                              d.epoch_length, **self._bad_input_policy())
        self.loaders = {"uniform": ShardLoader(uniform, d.batch_size, d.loader_workers)}
        self.steps_per_epoch = len(self.loaders["uniform"])
        if uses_rebalancing_sampler(cfg):
            rebalanced = RebalancedStream(self.train_index, cfg.method.gbbn.sampler_exponent, rank, world_size,
                                          cfg.train.seed, train_transform, uniform.samples_per_epoch,
                                          **self._bad_input_policy())
            self.loaders["rebalanced"] = ShardLoader(rebalanced, d.batch_size, d.loader_workers,
                                                     batches_per_epoch=self.steps_per_epoch)

    def _bad_input_policy(self) -> dict:
        return {"on_bad_sample": self.data_cfg.on_bad_sample, "verify_checksums": self.data_cfg.verify_checksums}

    def batches(self, epoch: int) -> Iterator[Batch]:
        for loader in self.loaders.values():
            loader.set_epoch(epoch)
        if "rebalanced" not in self.loaders:
            return (Batch(x, y) for x, y in self.loaders["uniform"])
        return (Batch(x, y, xr, yr) for (x, y), (xr, yr) in zip(self.loaders["uniform"], self.loaders["rebalanced"]))

    def eval_loaders(self) -> tuple[Iterable, Iterable]:
        """This rank's share of each split (every sample on exactly one rank), last partial batch kept.
        Every rank reads as many batches (ZeRO-3's forward passes are collective): a rank whose share is
        one short re-reads a sample, whose label is then PADDING_LABEL, and evaluation leaves it out."""
        return self._eval_loader(self.eval_index), self._eval_loader(self.train_index)

    def _eval_loader(self, index: ShardIndex) -> Iterable:
        stream = ShardStream(index, self.rank, self.world_size, self.data_cfg.seed, self.eval_transform,
                             **self._bad_input_policy())
        loader = ShardLoader(stream, self.data_cfg.batch_size, self.data_cfg.loader_workers, drop_last=False)
        return marked_padding(loader, stream.padding_per_epoch)

    def state_dict(self) -> dict:
        return {"world_size": self.world_size, **{name: loader.state_dict() for name, loader in self.loaders.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue where the state stood; a state written by another number of ranks (an elastic
        resize) continues after as many batches of the same global batch."""
        written_by = state.get("world_size", self.world_size)
        for name, loader in self.loaders.items():
            loader.load_state_dict(position_for_ranks(state[name], written_by, self.world_size, loader.batch_size))


def position_for_ranks(state: dict, written_by: int, world_size: int, batch_size: int) -> dict:
    """A loader's place in its epoch, written by `written_by` ranks, for `world_size` ranks that share
    the same global batch. Rank r of W reads positions r, r + W, ... of the epoch's global sequence
    (shards/epoch_plan.py), so k batches of every rank are its first k·G positions, whatever W is."""
    if written_by == world_size:
        return state
    position = state["position"] * written_by
    if position % (world_size * batch_size):
        raise ValueError(f"a reader {state['position']} samples into epoch {state['epoch'] + 1} on each of "
                         f"{written_by} ranks is not a whole number of batches of {batch_size} on {world_size} "
                         "ranks: resume with the same global batch (num_workers x data.batch_size)")
    return {**state, "position": position // world_size}


def in_memory_eval_split(cfg: RunConfig, data: LongTailData) -> Dataset:
    """The split train.eval_split names; a dataset without a validation split cannot evaluate on one."""
    if cfg.train.eval_split == "test":
        return data.test
    if data.val is None:
        raise ValueError(
            "train.eval_split='val' but the dataset has no validation split: set data.val_per_class > 0"
        )
    return data.val


def val_split_dir(root: Path) -> Path:
    """`<root>/val`; an error says how to write it when it holds no shard set."""
    val_dir = root / "val"
    if not (val_dir / INDEX_FILE).is_file():
        raise FileNotFoundError(
            f"train.eval_split='val' needs a validation shard set, but {val_dir} holds no {INDEX_FILE}. "
            f"Built-in datasets: write all splits into an empty folder with `allnc shards --out <folder> "
            f"--dataset <name> data.val_per_class=<N>` (train/ must be written with the same setting, so that "
            f"val/ is held out of it). File sources: `allnc shards --out {root} --split val` with the "
            f"validation list (--list <val list> --image-root <images>, or --inat-json, --imagefolder)."
        )
    return val_dir


def check_same_classes(train: ShardIndex, evaluated: ShardIndex) -> None:
    if train.class_names != evaluated.class_names:
        raise ValueError(
            f"{train.root} and {evaluated.root} name different classes ({train.num_classes} vs "
            f"{evaluated.num_classes}): write both splits with one `allnc shards` command"
        )


def stream_image_shape(index: ShardIndex, augment: str, image_size: int) -> tuple[int, int, int]:
    """C x H x W of the batches: the set's own shape, or data.image_size for sets of mixed sizes."""
    if index.image_shape is not None:
        return index.image_shape
    if augment != "imagenet":
        raise ValueError(
            f"{index.root} holds images of different sizes: set data.augment='imagenet', which crops them to "
            f"data.image_size ({image_size})"
        )
    return (3, image_size, image_size)
