"""Loader benchmark: the streaming shard reader against torchvision's map-style reading of the same
image files, the re-balanced stream's distribution error and throughput, and memory per loader worker.

    python -m bench.loader                 # full: ~10 min on 2 cores
    python -m bench.loader --smoke --out /tmp/loader.json

Both readers decode the same PNG bytes with the same function and run the same CIFAR-style
augmentation and normalisation, so the comparison is of the reading only. Configurations are measured
in interleaved rounds and the median is reported, since shared machines are noisy.
Writes JSON (default bench/results/loader.json); `python -m bench.publish` turns it into
docs/loader_benchmark.md and a section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from allnc_dist.config import DataConfig, GBBNConfig
from allnc_dist.data.datasets import build_transform
from allnc_dist.data.samplers import tempered_class_probabilities
from allnc_dist.shards import RebalancedStream, ShardIndex, ShardLoader, ShardStream, builtin_sources, load_index
from allnc_dist.shards import write_shards
from allnc_dist.shards.samples import decode_image, image_mode
from allnc_dist.shards.statistics import shard_channel_stats

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark mode."""

    throughput_set: dict  # DataConfig fields of the synthetic set the readers race on
    imagenet_shape: dict  # DataConfig fields of the ImageNet-LT-shaped set for memory
    samples_per_shard: int
    batches: int  # batches timed per measurement
    rounds: int


FULL = Scale(
    throughput_set=dict(num_classes=100, max_per_class=500, imbalance_ratio=100, image_size=32, channels=3),
    imagenet_shape=dict(num_classes=1000, max_per_class=1280, imbalance_ratio=256, image_size=16, channels=3),
    samples_per_shard=1000, batches=40, rounds=3,
)
SMOKE = Scale(
    throughput_set=dict(num_classes=10, max_per_class=100, imbalance_ratio=10, image_size=16, channels=3),
    imagenet_shape=dict(num_classes=50, max_per_class=64, imbalance_ratio=16, image_size=8, channels=3),
    samples_per_shard=100, batches=3, rounds=1,
)
BATCH = 128
WORKER_COUNTS = (1, 2)
REBALANCE_MODES = ("reversed", "class_balanced")  # method.gbbn.rebalance names of two exponents q


def sampler_exponent(mode: str) -> float:
    """The exponent q of p_k ∝ n_k^q that method.gbbn.rebalance=`mode` samples with."""
    return GBBNConfig(rebalance=mode).sampler_exponent


# ------------------------------------------------------------------------------------- data sets
def write_split(cfg: DataConfig, out: Path, split: str, samples_per_shard: int) -> ShardIndex:
    write_shards(builtin_sources(cfg)[split], out, split, samples_per_shard, seed=0, processes=os.cpu_count() or 1,
                 progress=False)
    return load_index(out / split)


def export_image_folder(index: ShardIndex, root: Path) -> Path:
    """The shards' image bytes as files, <root>/<class>/<key>.<ext>: what a map-style dataset reads."""
    for shard in range(len(index.shards)):
        with index.shard_path(shard).open("rb") as tar:
            for member in index.shards[shard].members:
                folder = root / f"{member.label:05d}"
                folder.mkdir(parents=True, exist_ok=True)
                tar.seek(member.offset)
                (folder / f"{member.key}.{member.ext}").write_bytes(tar.read(member.size))
    return root


class FileImages(ImageFolder):
    """torchvision's ImageFolder, decoding each file with the shard reader's decoder."""

    def __init__(self, root: Path, mode: str, transform: Callable) -> None:
        super().__init__(str(root), loader=lambda path: decode_image(Path(path).read_bytes(), mode),
                         transform=transform)


# ------------------------------------------------------------------------------------ measuring
def samples_per_second(batches: Iterable, count: int) -> float:
    """Throughput over `count` batches after the first (which pays for worker start-up)."""
    iterator = iter(batches)
    next(iterator)
    started, samples = time.perf_counter(), 0
    for _, (images, _) in zip(range(count), iterator):
        samples += len(images)
    elapsed = time.perf_counter() - started
    del iterator  # stops the loader's workers
    return samples / elapsed


def process_memory_mib(pid: int) -> dict[str, float]:
    """RSS and USS (private pages) of a process, in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) / 1024
    return {"rss_mib": fields["Rss"], "uss_mib": fields["Private_Clean"] + fields["Private_Dirty"]}


class MemoryProbe:
    """A transform wrapper that records, every `every` images, the peak memory of the process it runs
    in (a loader worker) to `<folder>/<pid>.json`."""

    def __init__(self, transform: Callable, folder: Path, every: int = 32) -> None:
        self.transform, self.folder, self.every = transform, folder, every
        self.calls, self.peak = 0, {"rss_mib": 0.0, "uss_mib": 0.0}

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.calls % self.every == 0:
            now = process_memory_mib(os.getpid())
            self.peak = {key: max(self.peak[key], now[key]) for key in now}
            (self.folder / f"{os.getpid()}.json").write_text(json.dumps(self.peak))
        self.calls += 1
        return self.transform(image)


def worker_memory(make_stream: Callable[[Callable], ShardStream], transform: Callable, batches: int) -> dict:
    """Peak RSS / USS of one loader worker over `batches` batches (or the whole epoch if shorter)."""
    with tempfile.TemporaryDirectory() as folder:
        loader = ShardLoader(make_stream(MemoryProbe(transform, Path(folder))), BATCH, num_workers=1, drop_last=False)
        for _ in zip(range(batches), loader):
            pass
        peaks = [json.loads(path.read_text()) for path in Path(folder).glob("*.json")]
    return {key: round(max(p[key] for p in peaks), 1) for key in ("rss_mib", "uss_mib")}


def total_variation(labels: np.ndarray, probabilities: np.ndarray) -> float:
    drawn = np.bincount(labels, minlength=len(probabilities)) / len(labels)
    return float(0.5 * np.abs(drawn - probabilities).sum())


# -------------------------------------------------------------------------------------- sections
def throughput(index: ShardIndex, folder: Path, scale: Scale) -> dict:
    mean, std = shard_channel_stats(index)
    transform = build_transform("cifar", index.image_shape[1:], mean, std)
    readers: dict[str, Callable[[int], Iterable]] = {
        "shards (streaming)": lambda w: ShardLoader(ShardStream(index, 0, 1, 0, transform), BATCH, w),
        "files (map-style ImageFolder)": lambda w: DataLoader(
            FileImages(folder, image_mode(index.image_shape), transform), BATCH, shuffle=True, num_workers=w,
            drop_last=True),
    }
    for mode in REBALANCE_MODES:
        readers[f"shards, re-balanced ({mode})"] = lambda w, m=mode: ShardLoader(
            RebalancedStream(index, sampler_exponent(m), 0, 1, 0, transform), BATCH, w)
    measured: dict[str, dict[int, list[float]]] = {name: {w: [] for w in WORKER_COUNTS} for name in readers}
    for _ in range(scale.rounds):
        for name, make in readers.items():
            for workers in WORKER_COUNTS:
                measured[name][workers].append(samples_per_second(make(workers), scale.batches))
    rates = {name: {w: statistics.median(v) for w, v in by_workers.items()} for name, by_workers in measured.items()}
    baseline, uniform = rates["files (map-style ImageFolder)"], rates["shards (streaming)"]
    return {
        "samples": index.total_samples,
        "image_shape": list(index.image_shape),
        "batch_size": BATCH,
        "rows": [
            {"reader": name, "loader_workers": w, "samples_per_s": round(rate, 1),
             "vs_map_style": round(rate / baseline[w], 3), "vs_uniform_stream": round(rate / uniform[w], 3)}
            for name, by_workers in rates.items() for w, rate in by_workers.items()
        ],
    }


def rebalanced_distribution(index: ShardIndex, name: str, draws_per_class: int = 100) -> list[dict]:
    """TV distance of the drawn classes to the target over draws_per_class·K draws, for one rank of
    one and one of two; and the labels actually read back (through the loader) for the first."""
    rows = []
    labels_of = np.array([m.label for shard in index.shards for m in shard.members])
    offsets = np.concatenate([[0], np.cumsum(index.shard_sizes)])
    for mode in REBALANCE_MODES:
        q = sampler_exponent(mode)
        target = tempered_class_probabilities(index.class_counts, q).numpy()
        draws = draws_per_class * index.num_classes
        for rank, world in ((0, 1), (1, 2)):
            plan = RebalancedStream(index, q, rank, world, 0, samples_per_epoch=draws).plan(0)
            labels = labels_of[offsets[plan.shards] + plan.members]
            rows.append({"set": name, "mode": mode, "rank": f"{rank} of {world}", "draws": draws,
                         "tv_distance": round(total_variation(labels, target), 5)})
    return rows


def read_back_tv(index: ShardIndex, name: str, draws_per_class: int = 100) -> list[dict]:
    """The same, from the labels the loader hands out (decoded samples, not the plan)."""
    rows = []
    for mode in REBALANCE_MODES:
        q, draws = sampler_exponent(mode), draws_per_class * index.num_classes
        loader = ShardLoader(RebalancedStream(index, q, 0, 1, 0, samples_per_epoch=draws), BATCH, 0,
                             drop_last=False)
        labels = torch.cat([y for _, y in loader]).numpy()
        target = tempered_class_probabilities(index.class_counts, q).numpy()
        rows.append({"set": name, "mode": mode, "rank": "0 of 1, read back", "draws": len(labels),
                     "tv_distance": round(total_variation(labels, target), 5)})
    return rows


def memory(index: ShardIndex, name: str, scale: Scale) -> list[dict]:
    mean, std = shard_channel_stats(index)
    transform = build_transform("cifar", index.image_shape[1:], mean, std)
    streams = {"uniform": lambda t: ShardStream(index, 0, 1, 0, t),
               "re-balanced (reversed)": lambda t: RebalancedStream(index, sampler_exponent("reversed"), 0, 1, 0, t)}
    return [{"set": name, "samples": index.total_samples, "classes": index.num_classes,
             "image_shape": list(index.image_shape), "stream": stream,
             **worker_memory(make, transform, scale.batches)}
            for stream, make in streams.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks that the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loader.json")
    parser.add_argument("--work-dir", type=Path, default=None, help="where to write the benchmark's shards")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    torch.set_num_threads(1)  # loader work is per-sample; more threads only contend on small machines

    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        synthetic = write_split(DataConfig(name="synthetic_lt", **scale.throughput_set), work / "synthetic", "train",
                                scale.samples_per_shard)
        digits = write_split(DataConfig(name="digits_lt"), work / "digits", "train", scale.samples_per_shard)
        imagenet = write_split(DataConfig(name="synthetic_lt", **scale.imagenet_shape), work / "imagenet_lt_shape",
                               "train", scale.samples_per_shard)
        folder = export_image_folder(synthetic, work / "files")
        results = {
            "smoke": args.smoke,
            "machine": platform.platform(terse=True),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "rounds": scale.rounds,
            "batches": scale.batches,
            "throughput": throughput(synthetic, folder, scale),
            "rebalanced_tv": [*rebalanced_distribution(digits, "digits-LT"), *read_back_tv(digits, "digits-LT"),
                              *rebalanced_distribution(synthetic, "synthetic-LT"),
                              *rebalanced_distribution(imagenet, "ImageNet-LT shape")],
            "memory": [*memory(digits, "digits-LT", scale), *memory(imagenet, "ImageNet-LT shape", scale)],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for rows in (results["throughput"]["rows"], results["rebalanced_tv"], results["memory"]):
        print(tabulate(rows, headers="keys", tablefmt="github"), end="\n\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
