"""The shard readers: exactly-once epochs with equal counts per rank, resume, resampling, bad input,
checksums, the re-balanced stream beside the uniform one, and decoding (the re-balanced stream's class
distribution: test_samplers.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from distributed import run_workers
from torch.distributed.checkpoint.stateful import Stateful

from allnc_dist.data.datasets import build_eval_transform, build_transform
from allnc_dist.engine.streams import position_for_ranks
from allnc_dist.shards import (
    BadSampleError,
    CorruptShardError,
    IndexFormatError,
    RebalancedStream,
    ShardIndex,
    ShardLoader,
    ShardStream,
    load_index,
)
from allnc_dist.shards.epoch_plan import epoch_shard_order, samples_per_rank

from shard_fixtures import FixtureSample, long_tail_labels, make_samples, png_bytes, write_shard_set

# 203 samples in 7 shards of uneven sizes: neither 2 nor 3 ranks divide it.
UNEVEN_SHARDS = [41, 17, 33, 25, 40, 31, 16]
UNEVEN_COUNTS = [60, 50, 40, 30, 23]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShardIndex, list[FixtureSample]]:
    samples = make_samples(long_tail_labels(UNEVEN_COUNTS))
    split_dir = tmp_path_factory.mktemp("uneven")
    write_shard_set(split_dir, samples, UNEVEN_SHARDS, len(UNEVEN_COUNTS))
    return load_index(split_dir), samples


def keys_of(loader: ShardLoader, samples: list[FixtureSample], limit: int | None = None) -> list[list[str]]:
    """The keys of each batch of one pass (of its first `limit` batches), told by their unique pixels."""
    key_of_pixels = {sample.chw_bytes: sample.key for sample in samples}
    batches = []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and labels.dtype == torch.long
        batches.append([key_of_pixels[image.numpy().tobytes()] for image in images])
        if len(batches) == limit:
            break
    return batches


def flat(batches: list[list[str]]) -> list[str]:
    return [key for batch in batches for key in batch]


def rank_batches(
    index: ShardIndex, samples: list[FixtureSample], world_size: int, workers: int, batch_size: int,
    epoch: int = 0, drop_last: bool = True, **stream_options,
) -> list[list[list[str]]]:
    """Each rank's batches (keys) of one epoch."""
    per_rank = []
    for rank in range(world_size):
        stream = ShardStream(index, rank, world_size, seed=3, **stream_options)
        loader = ShardLoader(stream, batch_size, workers, drop_last=drop_last)
        loader.set_epoch(epoch)
        per_rank.append(keys_of(loader, samples))
    return per_rank


# --------------------------------------------------------------------------------------------- index
def test_index_loads_the_members_as_written(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    index, samples = uneven
    assert index.total_samples == 203 and index.num_classes == 5 and index.class_counts == UNEVEN_COUNTS
    assert index.image_shape == (3, 4, 4) and [shard.samples for shard in index.shards] == UNEVEN_SHARDS
    members = index.shards[1].members
    assert [(m.key, m.label, m.size, m.ext) for m in members] == [
        (s.key, s.label, len(s.image), "png") for s in samples[41:58]
    ]


def test_index_with_inconsistent_counts_is_refused(tmp_path: Path) -> None:
    index = write_shard_set(tmp_path, make_samples([0, 1, 1]), [3], 2)
    index["class_counts"] = [2, 1]
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(IndexFormatError, match=r"index\.json: class_counts \[2, 1\] do not match"):
        load_index(tmp_path)


# ------------------------------------------------------------------------------- exactly once, equal
@pytest.mark.parametrize(("world_size", "workers"), [(2, 2), (3, 1)])
def test_each_sample_once_per_epoch_and_equal_batches_per_rank(
    uneven: tuple[ShardIndex, list[FixtureSample]], world_size: int, workers: int
) -> None:
    index, samples = uneven
    per_rank_size = samples_per_rank(203, world_size)  # 102 with 2 ranks, 68 with 3
    batch_size = 17  # divides both, so that no sample is dropped
    per_rank = rank_batches(index, samples, world_size, workers, batch_size, epoch=1, drop_last=False)

    assert [len(batches) for batches in per_rank] == [per_rank_size // batch_size] * world_size
    counts = Counter(key for batches in per_rank for key in flat(batches))
    assert set(counts) == {sample.key for sample in samples}
    # The only repeats are the counted padding, each inside the rank that pads.
    padding = [ShardStream(index, rank, world_size).padding_per_epoch for rank in range(world_size)]
    assert sum(padding) == world_size * per_rank_size - 203 == 1
    assert sum(counts.values()) - len(counts) == sum(padding)
    for batches, pad in zip(per_rank, padding):
        assert len(flat(batches)) - len(set(flat(batches))) == pad


def test_rank_and_world_size_come_from_the_environment(
    uneven: tuple[ShardIndex, list[FixtureSample]], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = uneven
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    stream = ShardStream(index)
    assert (stream.rank, stream.world_size, stream.samples_per_epoch) == (2, 3, 68)


def test_last_partial_batch_is_dropped(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    index, samples = uneven
    per_rank = rank_batches(index, samples, world_size=2, workers=0, batch_size=10)
    assert [len(batches) for batches in per_rank] == [10, 10]  # S = 102: 2 samples dropped per rank
    assert all(len(batch) == 10 for batches in per_rank for batch in batches)


def test_training_never_reads_the_padding(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    """203 samples on 2 ranks pad one; with batches of 17, the sixth global batch of 34 would hold it:
    training stops after the 5 global batches of real samples, as 1 rank with batches of 34 does."""
    index, samples = uneven
    two_ranks = rank_batches(index, samples, world_size=2, workers=0, batch_size=17)
    (one_rank,) = rank_batches(index, samples, world_size=1, workers=0, batch_size=34)
    assert [len(batches) for batches in two_ranks] == [5, 5] and len(one_rank) == 5
    for step, batch in enumerate(one_rank):
        assert sorted(batch) == sorted(two_ranks[0][step] + two_ranks[1][step])


def test_epochs_order_shards_alike_on_every_rank_and_differently_per_epoch(
    uneven: tuple[ShardIndex, list[FixtureSample]],
) -> None:
    index, _ = uneven
    for epoch in (0, 1):
        order = epoch_shard_order(len(index.shards), seed=3, epoch=epoch).tolist()
        plans = [ShardStream(index, rank, 3, seed=3).plan(epoch) for rank in range(3)]
        # The ranks' slices, without padding, are consecutive parts of one sequence in that order.
        shards = np.concatenate([plan.shards[: len(plan) - plan.padding] for plan in plans])
        assert len(shards) == 203
        assert list(dict.fromkeys(shards.tolist())) == order
    assert epoch_shard_order(7, seed=3, epoch=0).tolist() != epoch_shard_order(7, seed=3, epoch=1).tolist()


def test_order_is_the_same_with_any_number_of_loader_workers(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    index, samples = uneven
    in_process = rank_batches(index, samples, world_size=2, workers=0, batch_size=17)
    with_workers = rank_batches(index, samples, world_size=2, workers=2, batch_size=17)
    assert in_process == with_workers


# -------------------------------------------------------------------------------------------- resume
def test_resumed_epoch_continues_where_the_saved_state_left_off(
    uneven: tuple[ShardIndex, list[FixtureSample]],
) -> None:
    index, samples = uneven
    full = rank_batches(index, samples, world_size=2, workers=2, batch_size=17, epoch=4)[1]

    loader = ShardLoader(ShardStream(index, 1, 2, seed=3), 17, num_workers=2)
    loader.set_epoch(4)
    before = keys_of(loader, samples, limit=2)
    state = loader.state_dict()
    assert state == {"epoch": 4, "position": 34}

    resumed = ShardLoader(ShardStream(index, 1, 2, seed=3), 17, num_workers=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    after = keys_of(resumed, samples)
    assert before + after == full
    # The next pass of the same loader replays the whole epoch.
    assert keys_of(resumed, samples) == full


def test_loaders_of_one_stream_keep_their_own_positions(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    index, samples = uneven
    stream = ShardStream(index, 1, 2, seed=3)
    first, second = ShardLoader(stream, 17), ShardLoader(stream, 17)
    first.set_epoch(4)
    full = keys_of(first, samples)
    second.load_state_dict({"epoch": 4, "position": 34})
    assert keys_of(second, samples) == full[2:]
    # 5 batches of 17: the sixth global batch would hold the padding (test_training_never_reads_the_padding).
    assert first.state_dict() == {"epoch": 4, "position": 85} and keys_of(first, samples) == full
    assert isinstance(first, Stateful)


# ----------------------------------------------------------------------------------------- resampled
def test_resampled_epochs_have_exactly_epoch_length_samples_per_rank(
    uneven: tuple[ShardIndex, list[FixtureSample]],
) -> None:
    index, samples = uneven
    per_rank = rank_batches(
        index, samples, world_size=2, workers=2, batch_size=10, resampled=True, epoch_length=50
    )
    assert [len(flat(batches)) for batches in per_rank] == [50, 50]
    assert flat(per_rank[0]) != flat(per_rank[1])
    again = rank_batches(index, samples, world_size=2, workers=0, batch_size=10, resampled=True, epoch_length=50)
    assert again == per_rank


# ----------------------------------------------------------------------------------------- bad input
BAD_SAMPLE = 7  # the broken sample: in the first of four shards of ten


def break_image(sample: FixtureSample) -> None:
    sample.image = b"\x89PNG not really"


def drop_label(sample: FixtureSample) -> None:
    sample.label_text = None


def garble_label(sample: FixtureSample) -> None:
    sample.label_text = b"seven"


def out_of_range_label(sample: FixtureSample) -> None:
    sample.label_text = b"12"


def other_label(sample: FixtureSample) -> None:
    sample.label_text = str((sample.label + 1) % 5).encode()


def other_size(sample: FixtureSample) -> None:
    sample.image = png_bytes(np.zeros((3, 3, 3), dtype=np.uint8))


BREAKERS: dict[str, Callable[[FixtureSample], None]] = {
    "undecodable": break_image,
    "missing_label": drop_label,
    "bad_label": garble_label,
    "label_out_of_range": out_of_range_label,
    "label_mismatch": other_label,
    "wrong_shape": other_size,
}


def write_small_set(split_dir: Path, broken: dict[int, Callable[[FixtureSample], None]]) -> list[FixtureSample]:
    """40 samples of 5 classes in 4 shards of 10, with the given samples broken."""
    samples = make_samples(long_tail_labels([12, 10, 8, 6, 4]), seed=1)
    for position, breaker in broken.items():
        breaker(samples[position])
    write_shard_set(split_dir, samples, [10, 10, 10, 10], 5)
    return samples


def truncate_first_shard(split_dir: Path) -> None:
    """Cut the first shard in the middle of sample BAD_SAMPLE's image data."""
    member = load_index(split_dir).shards[0].member(BAD_SAMPLE)
    with open(split_dir / "train-000000.tar", "r+b") as file:
        file.truncate(member.offset + member.size // 2)


def broken_set(split_dir: Path, reason: str) -> tuple[list[FixtureSample], set[str]]:
    """A small set with one kind of bad input; returns the samples and the keys that are bad."""
    if reason == "truncated":
        samples = write_small_set(split_dir, {})
        truncate_first_shard(split_dir)
        return samples, {sample.key for sample in samples[BAD_SAMPLE:10]}
    samples = write_small_set(split_dir, {BAD_SAMPLE: BREAKERS[reason]})
    return samples, {samples[BAD_SAMPLE].key}


BAD_INPUTS = ["truncated", *BREAKERS]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reason", BAD_INPUTS)
def test_bad_sample_raises_naming_shard_and_key(tmp_path: Path, reason: str) -> None:
    _, bad_keys = broken_set(tmp_path, reason)
    index = load_index(tmp_path)
    # A truncated file no longer matches its checksum; reading it at all needs verification off.
    loader = ShardLoader(ShardStream(index, 0, 1, verify_checksums=reason != "truncated"), 8, num_workers=2)
    with pytest.raises(BadSampleError) as error:
        list(loader)
    message = str(error.value)
    assert str(tmp_path / "train-000000.tar") in message and f"[{reason}]" in message
    assert any(f"key {key}" in message for key in bad_keys)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reason", BAD_INPUTS)
def test_skipped_bad_samples_are_counted_and_replaced(tmp_path: Path, reason: str) -> None:
    samples, bad_keys = broken_set(tmp_path, reason)
    index = load_index(tmp_path)
    options = {"on_bad_sample": "skip", "verify_checksums": reason != "truncated"}
    loaders = [ShardLoader(ShardStream(index, rank, 2, **options), 5, num_workers=2) for rank in range(2)]
    per_rank = [keys_of(loader, samples) for loader in loaders]

    assert [len(batches) for batches in per_rank] == [4, 4]  # S = 20 per rank, as without bad input
    seen = {key for batches in per_rank for key in flat(batches)}
    assert seen == {sample.key for sample in samples} - bad_keys
    skipped = sum((loader.skipped for loader in loaders), Counter())
    assert skipped == Counter({reason: len(bad_keys)})


def test_an_index_offset_off_its_member_is_a_corrupt_member(tmp_path: Path) -> None:
    samples = write_small_set(tmp_path, {})
    index = load_index(tmp_path)
    index.shards[0].offsets[BAD_SAMPLE] = index.shards[0].offsets[BAD_SAMPLE + 1]
    with pytest.raises(BadSampleError, match=f"key {samples[BAD_SAMPLE].key}: no tar header of .*corrupt_member"):
        list(ShardLoader(ShardStream(index), 8))


@pytest.mark.timeout(60)
def test_skipping_logs_one_warning_per_bad_sample(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    samples = write_small_set(tmp_path, {3: break_image, 25: drop_label})
    stream = ShardStream(load_index(tmp_path), on_bad_sample="skip")
    with caplog.at_level(logging.WARNING, logger="allnc_dist.shards.samples"):
        list(ShardLoader(stream, 8))
    per_sample = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped bad sample")]
    assert len(per_sample) == 2
    assert any("train-000000.tar" in m and f"key {samples[3].key}" in m for m in per_sample)
    assert any("train-000002.tar" in m and f"key {samples[25].key}" in m for m in per_sample)
    assert "skipped 2 bad samples" in caplog.text  # the end-of-epoch report


@pytest.mark.timeout(60)
def test_a_shard_of_only_bad_samples_ends_with_equal_counts(tmp_path: Path) -> None:
    samples = write_small_set(tmp_path, {position: break_image for position in range(20, 30)})
    loaders = [ShardLoader(ShardStream(load_index(tmp_path), rank, 2, on_bad_sample="skip"), 4, num_workers=2)
               for rank in range(2)]
    per_rank = [keys_of(loader, samples) for loader in loaders]
    assert [len(flat(batches)) for batches in per_rank] == [20, 20]
    assert sum((loader.skipped for loader in loaders), Counter()) == Counter({"undecodable": 10})


@pytest.mark.timeout(60)
def test_nothing_but_bad_samples_is_an_error_not_a_hang(tmp_path: Path) -> None:
    write_small_set(tmp_path, {position: break_image for position in range(40)})
    loader = ShardLoader(ShardStream(load_index(tmp_path), on_bad_sample="skip"), 8, num_workers=2)
    with pytest.raises(BadSampleError, match="every sample is bad"):
        list(loader)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_with_altered_bytes_is_refused(tmp_path: Path, workers: int) -> None:
    samples = write_small_set(tmp_path, {})
    shard = tmp_path / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[load_index(tmp_path).shards[2].member(4).offset + 20] ^= 0xFF  # one pixel byte, same size
    shard.write_bytes(bytes(data))
    loader = ShardLoader(ShardStream(load_index(tmp_path), on_bad_sample="skip"), 8, num_workers=workers)
    with pytest.raises(CorruptShardError, match=f"checksum mismatch: {re.escape(str(shard))} has sha256"):
        keys_of(loader, samples)


# ---------------------------------------------------------------------------------------- rebalanced
# The class mix per rank, for every q: test_samplers.py.
def test_rebalanced_stream_zips_with_the_uniform_one(uneven: tuple[ShardIndex, list[FixtureSample]]) -> None:
    index, samples = uneven
    for rank in range(3):
        uniform = ShardLoader(ShardStream(index, rank, 3), 16, num_workers=2)
        rebalanced = ShardLoader(RebalancedStream(index, -1.0, rank, 3), 16, num_workers=2)
        pairs = list(zip(uniform, rebalanced))
        assert len(pairs) == len(uniform) == len(rebalanced) == 68 // 16
        assert all(x.shape == xr.shape and y.shape == yr.shape for (x, y), (xr, yr) in pairs)
        assert rebalanced.position == uniform.position == 64


@pytest.mark.timeout(60)
def test_rebalanced_stream_handles_bad_input_like_the_uniform_one(tmp_path: Path) -> None:
    write_small_set(tmp_path, {position: break_image for position in range(0, 40, 2)})
    index = load_index(tmp_path)
    with pytest.raises(BadSampleError, match=r"train-0000\d\d\.tar, key \d{9}: cannot decode"):
        list(ShardLoader(RebalancedStream(index, 0.0), 8))
    loader = ShardLoader(RebalancedStream(index, 0.0, on_bad_sample="skip", samples_per_epoch=200), 8, num_workers=2)
    assert sum(len(labels) for _, labels in loader) == 200
    assert set(loader.skipped) == {"undecodable"} and loader.skipped["undecodable"] > 0


# ------------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("channels", [1, 3])
def test_decoded_images_are_the_written_pixels(tmp_path: Path, channels: int) -> None:
    samples = make_samples([0, 1, 2, 1, 0, 2], channels=channels, size=5)
    write_shard_set(tmp_path, samples, [4, 2], 3)
    stream = ShardStream(load_index(tmp_path))
    images, labels = next(iter(ShardLoader(stream, 6)))
    assert images.shape == (6, channels, 5, 5) and images.dtype == torch.uint8
    decoded = {image.numpy().tobytes(): int(label) for image, label in zip(images, labels)}
    assert decoded == {sample.chw_bytes: sample.label for sample in samples}


def test_images_of_many_sizes_batch_through_the_imagenet_transforms(tmp_path: Path) -> None:
    samples = [sample for size in (6, 9, 12) for sample in make_samples([0, 1], size=size, seed=size)]
    for number, sample in enumerate(samples):
        sample.key = f"{number:09d}"
    write_shard_set(tmp_path, samples, [6], 2, one_shape=False)
    index = load_index(tmp_path)
    with pytest.raises(ValueError, match="images of different shapes"):
        list(ShardLoader(ShardStream(index), 6))
    mean, std = [0.5] * 3, [0.25] * 3
    for transform in (build_transform("imagenet", (8, 8), mean, std, randaugment=True),
                      build_eval_transform("imagenet", (8, 8), mean, std)):
        images, labels = next(iter(ShardLoader(ShardStream(index, transform=transform), 6)))
        assert images.shape == (6, 3, 8, 8) and images.dtype == torch.float32


def test_a_reader_resized_inside_an_epoch_reads_what_one_fixed_size_reader_reads(
    uneven: tuple[ShardIndex, list[FixtureSample]],
) -> None:
    """An elastic run keeps its global batch of 34. Two ranks (batches of 17) that handed out 2 batches
    each are taken over by one rank (batches of 34): it reads the global batches that one rank reads
    from its third on. Back from one rank to two, likewise."""
    index, samples = uneven
    (one_rank,) = rank_batches(index, samples, world_size=1, workers=0, batch_size=34, epoch=2)

    def resumed(state: dict, rank: int, world_size: int, batch_size: int) -> list[list[str]]:
        loader = ShardLoader(ShardStream(index, rank, world_size, seed=3), batch_size)
        loader.load_state_dict(state)
        loader.set_epoch(2)
        return keys_of(loader, samples)

    shrunk = resumed(position_for_ranks({"epoch": 2, "position": 34}, 2, 1, 34), 0, 1, 34)
    assert shrunk == one_rank[2:]
    grown = [resumed(position_for_ranks({"epoch": 2, "position": 68}, 1, 2, 17), rank, 2, 17) for rank in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*grown)] == [sorted(batch) for batch in one_rank[2:]]
    with pytest.raises(ValueError, match="not a whole number of batches of 17 on 2 ranks"):
        position_for_ranks({"epoch": 2, "position": 17}, 1, 2, 17)


def _verify_on_rank(rank: int, world_size: int, root: str, out: str) -> None:
    import torch.distributed as dist  # noqa: PLC0415

    from allnc_dist.shards import index as shard_index  # noqa: PLC0415

    hashed = []
    file_sha256 = shard_index.file_sha256
    shard_index.file_sha256 = lambda path: hashed.append(Path(path).name) or file_sha256(path)

    def gather(value):
        gathered = [None] * world_size
        dist.all_gather_object(gathered, value)
        return gathered

    try:
        shard_index.verify_across_ranks([load_index(Path(root))], rank, world_size, gather)
        outcome = {"hashed": hashed, "verified": len(shard_index.verified_fingerprints())}
    except CorruptShardError as err:
        outcome = {"hashed": hashed, "error": str(err)}
    (Path(out) / f"{rank}.json").write_text(json.dumps(outcome))


def test_two_ranks_hash_each_shard_once_between_them_and_both_stop_on_a_bad_one(
    uneven: tuple[ShardIndex, list[FixtureSample]], tmp_path: Path
) -> None:
    """Two gloo processes on one shard set of 7 shards: rank 0 hashes shards 0, 2, 4, 6 and rank 1 the
    others, and each ends with all 7 verified. With the second shard corrupt, both ranks stop with the
    error rank 1 found."""
    index, _ = uneven
    names = [index.shard_path(i).name for i in range(len(index.shards))]
    run_workers(_verify_on_rank, 2, tmp_path, str(index.root), str(tmp_path))
    outcomes = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [o["hashed"] for o in outcomes] == [names[0::2], names[1::2]]
    assert [o["verified"] for o in outcomes] == [7, 7]

    broken = tmp_path / "broken"
    shutil.copytree(index.root, broken)
    shard = broken / names[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (tmp_path / "run2").mkdir()
    run_workers(_verify_on_rank, 2, tmp_path / "run2", str(broken), str(tmp_path / "run2"))
    errors = [json.loads((tmp_path / "run2" / f"{rank}.json").read_text())["error"] for rank in (0, 1)]
    assert errors[0] == errors[1] and f"checksum mismatch: {shard}" in errors[0]
