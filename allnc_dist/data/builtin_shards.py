"""The built-in datasets (digits-LT, synthetic-LT, CIFAR-LT) as shards, for the jobs that stream shards.

The Ray engine reads shards only. A Ray job (or a sweep) given a built-in dataset writes it as shards
under its output folder first, then trains from those; `resolve_shards` does both for a job's configs.
The folder is on the driver's disk. A Ray worker on another node writes the same set again into its
own scratch folder (`shards_on_this_node`): the writer is deterministic, and the copy must have the
driver's index files byte for byte (`data.builtin_sha256`).
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
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


def index_sha256(folder: Path) -> str:
    """The sha256 of a shard set's index files (they hold every shard's sha256), split by split."""
    digest = hashlib.sha256()
    for index in sorted(folder.glob("*/index.json")):
        digest.update(index.parent.name.encode() + b"\0" + index.read_bytes())
    return digest.hexdigest()


def streaming_shards(cfg: RunConfig, folder: Path, builtin_sha256: str | None = None) -> RunConfig:
    """`cfg` streaming the shard set in `folder`, by its absolute path: Ray workers and Tune trials run
    in working directories of their own."""
    data = {"source": "shards", "shards": str(folder.resolve()), "builtin_sha256": builtin_sha256}
    return config_from_dict(deep_merge(cfg.model_dump(mode="json"), {"data": data}))


def shards_on_this_node(data: DataConfig) -> DataConfig:
    """`data` as this node reads it: its shard folder when the node sees it; for a built-in dataset the
    driver wrote on another node, the same set written here, under the node's temp folder ($TMPDIR),
    once per node (workers of one node take turns on a lock), and checked against the driver's."""
    if data.builtin_sha256 is None or (Path(data.shards) / "train" / "index.json").is_file():
        return data
    from ..errors import DataError  # noqa: PLC0415

    folder = Path(tempfile.gettempdir()) / "allnc-shards" / data.builtin_sha256[:16]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_builtin_shards(data.model_copy(update={"source": "memory"}), folder)
    if index_sha256(folder) != data.builtin_sha256:
        raise DataError(f"{data.shards} is not on this node, and the {data.name} shards written again in {folder} "
                        f"differ from the driver's (index sha256 {index_sha256(folder)} != {data.builtin_sha256}); "
                        "put the data on storage every node mounts and pass it as --data")
    return data.model_copy(update={"shards": str(folder)})


def resolve_shards(configs: Mapping[Key, RunConfig], out: Path) -> dict[Key, RunConfig]:
    """A job's configs, each streaming shards. A config that streams shards already keeps its folder;
    a built-in dataset is written once, under `out`/shards (the configs of a job share their data
    section), and the configs that name it are pointed there."""
    built_in = next((cfg.data for cfg in configs.values() if cfg.data.source == "memory"), None)
    written = write_builtin_shards(built_in, out / SHARDS_FOLDER) if built_in is not None else None
    digest = index_sha256(written) if written is not None else None
    return {key: streaming_shards(cfg, written, digest) if cfg.data.source == "memory"
            else streaming_shards(cfg, Path(cfg.data.shards), cfg.data.builtin_sha256)
            for key, cfg in configs.items()}
