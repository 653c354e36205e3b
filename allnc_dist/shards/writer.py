"""`write_shards`: one split of an `ImageSource` as long-tailed WebDataset shards (docs/shards.md).

The writer plans first: a seeded permutation of the N samples, cut into shards of
`samples_per_shard`, and a hash of every shard's plan (its keys, labels and sample identities). It
then writes the shards independently, inline or in a process pool. Each goes to a temporary file
that is fsynced and renamed, then gets its sidecar `<name>.json` (its index entry and plan hash). A
rerun keeps every shard whose sidecar holds its plan hash and whose file still has the recorded
sha256, so an interrupted write resumes where it stopped. `index.json` comes last, atomically.

What the split folder may already hold, and what happens to it:

- temporary files of crashed runs: removed;
- shards and sidecars of an unfinished run (no index.json) with another plan: rewritten, or removed
  when they lie beyond this plan's last shard;
- an index.json of another plan, i.e. a finished shard set someone may be reading: the writer
  refuses (`OtherPlanError`, naming what differs) rather than destroy it.

One writer per folder at a time.
"""

from __future__ import annotations

import sys
import hashlib
import io
import json
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch
from tqdm import tqdm

from ..durable_files import atomic_output, file_sha256
from .sources import ImageSource

WRITER_VERSION = 1
INDEX_FORMAT = "allnc-shards"
INDEX_NAME = "index.json"
# Fixed member metadata, so that the same plan always gives bit-identical tar files.
MEMBER_MODE = 0o644
# index.json fields compared to tell the user how an existing shard set's plan differs from this one.
PLAN_FIELDS = (
    "dataset",
    "seed",
    "samples_per_shard",
    "total_samples",
    "num_classes",
    "image_shape",
    "profile",
    "class_counts",
    "class_names",
)
# A difference longer than this is named, not shown (class lists run to thousands of entries).
MAX_SHOWN_DIFFERENCE = 80
# `.<name>.tmp-<pid>`: the temporary files `atomic_output` writes.
TEMPORARY_FILE = re.compile(r"^\..+\.tmp-\d+$")


class OtherPlanError(FileExistsError):
    """The split folder holds a finished shard set (index.json) written with another plan."""


class ShardWriteError(RuntimeError):
    """A sample could not be written; the message names the shard, the key and the sample."""


@dataclass(frozen=True)
class ShardPlan:
    """Which samples one shard holds, in tar order, and the hash that identifies that plan."""

    name: str
    sample_ids: list[int]
    plan_sha256: str


def sample_key(sample_id: int) -> str:
    return f"{sample_id:09d}"


def shard_name(split: str, position: int) -> str:
    return f"{split}-{position:06d}.tar"


def sidecar_path(split_dir: Path, name: str) -> Path:
    return split_dir / f"{name}.json"


def canonical_json(value: Any) -> bytes:
    """Compact JSON in insertion order: the same value always gives the same bytes."""
    return json.dumps(value, separators=(",", ":")).encode()


def json_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


# -------------------------------------------------------------------------------------------- plan
def plan_shards(source: ImageSource, split: str, samples_per_shard: int, seed: int) -> list[ShardPlan]:
    """The seeded permutation of the samples, cut into shards of `samples_per_shard` (the last holds the rest)."""
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed)).tolist()
    starts = range(0, len(order), samples_per_shard)
    return [
        shard_plan(source, shard_name(split, position), order[start : start + samples_per_shard])
        for position, start in enumerate(starts)
    ]


def shard_plan(source: ImageSource, name: str, sample_ids: list[int]) -> ShardPlan:
    planned = {
        "writer_version": WRITER_VERSION,
        "dataset": source.dataset,
        "definition": source.definition(),
        "name": name,
        "samples": [[sample_key(i), source.labels[i], source.identity(i)] for i in sample_ids],
    }
    return ShardPlan(name, sample_ids, json_sha256(planned))


def index_header(source: ImageSource, split: str, seed: int, samples_per_shard: int, plans: list[ShardPlan]) -> dict:
    """Every index.json field but `shards`; `plan_sha256` covers them and every shard's plan."""
    header = {
        "format": INDEX_FORMAT,
        "writer_version": WRITER_VERSION,
        "dataset": source.dataset,
        "split": split,
        "num_classes": len(source.class_names),
        "class_names": source.class_names,
        "class_counts": source.class_counts,
        "profile": source.profile,
        "seed": seed,
        "samples_per_shard": samples_per_shard,
        "total_samples": len(source),
        "image_shape": source.image_shape,
    }
    header["plan_sha256"] = json_sha256({**header, "shard_plans": [plan.plan_sha256 for plan in plans]})
    return header


# ------------------------------------------------------------------------------------------ folder
def refuse_other_plan(index_path: Path, header: dict) -> None:
    """Raise `OtherPlanError` if `index_path` exists and records another plan than `header`'s."""
    if not index_path.is_file():
        return
    advice = f"pick an empty output folder, or delete {index_path.parent} to replace it"
    try:
        existing = json.loads(index_path.read_bytes())
    except ValueError:
        raise OtherPlanError(f"{index_path} is not valid JSON; {advice}") from None
    if existing.get("plan_sha256") == header["plan_sha256"]:
        return
    differences = "; ".join(plan_differences(existing, header))
    raise OtherPlanError(f"{index_path} holds a finished shard set of another plan ({differences}); {advice}")


def plan_differences(existing: dict, header: dict) -> list[str]:
    differences = [
        describe_difference(field, existing.get(field), header[field])
        for field in PLAN_FIELDS
        if existing.get(field) != header[field]
    ]
    return differences or ["the same parameters but other samples, e.g. another data.seed or other image files"]


def describe_difference(field: str, there: Any, now: Any) -> str:
    shown = f"{field} {there!r} there, {now!r} now"
    return shown if len(shown) <= MAX_SHOWN_DIFFERENCE else f"{field} differ"


def remove_leftovers(split_dir: Path, split: str, planned_names: set[str]) -> None:
    """Delete temporary files of crashed runs, and shards (with sidecars) beyond this plan."""
    shard_or_sidecar = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar(\.json)?$")
    for path in split_dir.iterdir():
        beyond_plan = shard_or_sidecar.match(path.name) and path.name.removesuffix(".json") not in planned_names
        if TEMPORARY_FILE.match(path.name) or beyond_plan:
            path.unlink()


# ------------------------------------------------------------------------------------------- shards
def add_member(tar: tarfile.TarFile, file: BinaryIO, name: str, data: bytes) -> int:
    """Append a regular file with fixed metadata; return the offset of its data in the tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header_offset = file.tell()
    tar.addfile(info, io.BytesIO(data))
    return header_offset + tarfile.BLOCKSIZE  # a ustar header is exactly one block


def encoded_sample(source: ImageSource, sample_id: int, shard: str) -> tuple[bytes, str]:
    try:
        return source.encoded_image(sample_id)
    except Exception as err:
        raise ShardWriteError(
            f"shard {shard}, key {sample_key(sample_id)} ({source.identity(sample_id)}): {err}"
        ) from err


def write_tar(file: BinaryIO, source: ImageSource, plan: ShardPlan) -> list[list]:
    """Write the plan's samples as a ustar tar into `file`; return the index's `members` entries."""
    members = []
    with tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample_id in plan.sample_ids:
            key, label = sample_key(sample_id), source.labels[sample_id]
            image, ext = encoded_sample(source, sample_id, plan.name)
            data_offset = add_member(tar, file, f"{key}.{ext}", image)
            add_member(tar, file, f"{key}.cls", str(label).encode("ascii"))
            members.append([key, label, data_offset, len(image), ext])
    return members


def write_shard(source: ImageSource, plan: ShardPlan, path: Path) -> dict:
    """Write one shard atomically; return its index entry."""
    with atomic_output(path) as file:
        members = write_tar(file, source, plan)
    return {"name": plan.name, "samples": len(plan.sample_ids), "sha256": file_sha256(path), "members": members}


def finished_entry(plan: ShardPlan, split_dir: Path) -> dict | None:
    """The entry of a shard an earlier run finished for this very plan, if its file is intact."""
    sidecar, shard = sidecar_path(split_dir, plan.name), split_dir / plan.name
    if not (sidecar.is_file() and shard.is_file()):
        return None
    try:
        recorded = json.loads(sidecar.read_bytes())
    except ValueError:  # never torn (written atomically), but perhaps edited by hand: redo the shard
        return None
    if recorded.get("plan_sha256") != plan.plan_sha256:
        return None
    return recorded["shard"] if file_sha256(shard) == recorded["shard"]["sha256"] else None


def ensure_shard(source: ImageSource, plan: ShardPlan, split_dir: Path) -> dict:
    """The shard's index entry: kept from an earlier run when finished and intact, else written now."""
    kept = finished_entry(plan, split_dir)
    if kept is not None:
        return kept
    entry = write_shard(source, plan, split_dir / plan.name)
    with atomic_output(sidecar_path(split_dir, plan.name)) as file:
        file.write(canonical_json({"plan_sha256": plan.plan_sha256, "shard": entry}))
    return entry


# A pool process's source, installed once per process: sending it with every shard would copy
# in-memory datasets (CIFAR's 50k images) over and over.
_process_source: ImageSource | None = None


def install_process_source(source: ImageSource) -> None:
    global _process_source
    _process_source = source
    torch.set_num_threads(1)  # the processes are the parallelism; more threads would oversubscribe


def ensure_shard_in_process(plan: ShardPlan, split_dir: Path) -> dict:
    return ensure_shard(_process_source, plan, split_dir)


def ensured_shards(
    source: ImageSource, plans: list[ShardPlan], split_dir: Path, processes: int
) -> Iterator[tuple[int, dict]]:
    """(position in the plan, index entry) of every shard, in the order they finish."""
    if processes == 1:
        for position, plan in enumerate(plans):
            yield position, ensure_shard(source, plan, split_dir)
        return
    workers = min(processes, len(plans))
    with ProcessPoolExecutor(workers, initializer=install_process_source, initargs=(source,)) as pool:
        futures = {pool.submit(ensure_shard_in_process, plan, split_dir): i for i, plan in enumerate(plans)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # stop at the first failure, not after every queued shard
            raise


def all_shard_entries(
    source: ImageSource, plans: list[ShardPlan], split_dir: Path, processes: int, progress: bool
) -> list[dict]:
    """Every shard's entry in plan order, with a progress bar over samples (throughput in samples/s)."""
    entries: list[dict] = [{}] * len(plans)
    with tqdm(total=len(source), unit=" samples", desc=f"{split_dir.name} shards", disable=not (progress and sys.stderr.isatty())) as bar:
        for position, entry in ensured_shards(source, plans, split_dir, processes):
            entries[position] = entry
            bar.update(entry["samples"])
    return entries


def write_shards(
    source: ImageSource,
    out_dir: Path,
    split: str,
    samples_per_shard: int,
    seed: int,
    processes: int = 1,
    progress: bool = True,
) -> dict:
    """Write `source` as the shard set `out_dir/split/` (resuming an interrupted write); return its index."""
    if samples_per_shard < 1 or processes < 1:
        raise ValueError(f"need samples_per_shard >= 1 and processes >= 1, got {samples_per_shard}, {processes}")
    if len(source) == 0:
        raise ValueError(f"the {source.dataset} source holds no samples")
    split_dir = Path(out_dir) / split
    plans = plan_shards(source, split, samples_per_shard, seed)
    header = index_header(source, split, seed, samples_per_shard, plans)
    split_dir.mkdir(parents=True, exist_ok=True)
    refuse_other_plan(split_dir / INDEX_NAME, header)
    remove_leftovers(split_dir, split, {plan.name for plan in plans})
    index = {**header, "shards": all_shard_entries(source, plans, split_dir, processes, progress)}
    with atomic_output(split_dir / INDEX_NAME) as file:
        file.write(canonical_json(index) + b"\n")
    return index
