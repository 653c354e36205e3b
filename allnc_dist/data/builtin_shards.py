"""The built-in datasets (digits-LT, synthetic-LT, CIFAR-LT) as shards, for the jobs that stream shards.

The Ray engine reads shards only. A Ray job (or a sweep) given a built-in dataset writes it as shards
under its output folder first, then trains from those; `resolve_shards` does both for a job's configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, TypeVar

from ..config import DataConfig, RunConfig, config_from_dict, deep_merge

SHARDS_FOLDER = "shards"  # under the job's output folder
SAMPLES_PER_SHARD = 1000

Key = TypeVar("Key")


def write_builtin_shards(data: DataConfig, folder: Path) -> Path:
    """Write every split of `data`'s built-in dataset as shards under `folder` (an interrupted write
    resumes, a finished one is kept); returns the folder, absolute."""
    from ..shards import builtin_sources, write_shards  # noqa: PLC0415 (torch import)

    for split, source in builtin_sources(data).items():
        write_shards(source, folder, split, SAMPLES_PER_SHARD, seed=data.seed, progress=False)
    return folder.resolve()


def streaming_shards(cfg: RunConfig, folder: Path) -> RunConfig:
    """`cfg` streaming the shard set in `folder`, by its absolute path: Ray workers and Tune trials run
    in working directories of their own."""
    return config_from_dict(deep_merge(cfg.model_dump(mode="json"),
                                       {"data": {"source": "shards", "shards": str(folder.resolve())}}))


def resolve_shards(configs: Mapping[Key, RunConfig], out: Path) -> dict[Key, RunConfig]:
    """A job's configs, each streaming shards. A config that streams shards already keeps its folder;
    a built-in dataset is written once, under `out`/shards (the configs of a job share their data
    section), and the configs that name it are pointed there."""
    built_in = next((cfg.data for cfg in configs.values() if cfg.data.source == "memory"), None)
    written = write_builtin_shards(built_in, out / SHARDS_FOLDER) if built_in is not None else None
    return {key: streaming_shards(cfg, written if cfg.data.source == "memory" else Path(cfg.data.shards))
            for key, cfg in configs.items()}
