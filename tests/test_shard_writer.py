"""The shard writer (docs/shards.md): exact round trips, offsets, checksums, fair mixes, resumable and
parallel writes giving identical bytes, the file sources, and the `allnc shards` command."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from sklearn.datasets import load_digits
from test_data import FAKE_PER_CLASS, write_fake_cifar10
from torchvision.datasets import ImageFolder

from allnc_dist.cli import main
from allnc_dist.config import DataConfig
from allnc_dist.data import build_data, exponential_profile
from allnc_dist.data.digits import digits_lt_split_indices
from allnc_dist.shards import (
    OtherPlanError,
    ShardWriteError,
    builtin_sources,
    image_list_source,
    imagefolder_source,
    inat_source,
    write_shards,
)
from allnc_dist.shards.sources import ImageSource

REPO = Path(__file__).resolve().parents[1]
DIGITS_PER_SHARD = 50
# A synthetic-LT set that takes the writer about a second, so that a kill lands half-way.
SYNTHETIC_OVERRIDES = {"num_classes": 10, "max_per_class": 300, "imbalance_ratio": 10.0, "image_size": 64}
SYNTHETIC_PER_SHARD = 40
KILL_WAIT_SECONDS = 120

Sources = dict[str, ImageSource]  # split -> source
Written = tuple[Path, dict]  # output folder, index of its train split


# ------------------------------------------------------------------------------------------ helpers
def write_digits(source: ImageSource, out: Path, processes: int = 1) -> dict:
    return write_shards(source, out, "train", DIGITS_PER_SHARD, seed=0, processes=processes, progress=False)


def shard_paths(split_dir: Path, index: dict) -> list[Path]:
    return [split_dir / shard["name"] for shard in index["shards"]]


def read_tar(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(member, tar.extractfile(member).read()) for member in tar.getmembers()]


def decoded_png(data: bytes) -> torch.Tensor:
    """PNG bytes as uint8 C x H x W; 1 channel must come as mode L, 3 as RGB (docs/shards.md)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode in ("L", "RGB")
    pixels = np.array(image)
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_digests(split_dir: Path) -> dict[str, str]:
    """Every file of a split folder (shards, sidecars, index.json) and its sha256."""
    return {path.name: file_digest(path) for path in sorted(split_dir.iterdir())}


def samples_read_back(split_dir: Path, index: dict) -> dict[str, tuple[int, str, bytes]]:
    """key -> (label, extension, image bytes), read with plain tarfile; checks the member pairing."""
    samples = {}
    for path in shard_paths(split_dir, index):
        members = read_tar(path)
        for (image_info, image), (label_info, label) in zip(members[::2], members[1::2], strict=True):
            key, ext = image_info.name.split(".")
            assert label_info.name == f"{key}.cls"
            samples[key] = (int(label.decode("ascii")), ext, image)
    return samples


def write_image(path: Path, image_format: str, value: int) -> bytes:
    """A tiny 8 x 8 RGB image file; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 7)).save(path, format=image_format)
    return path.read_bytes()


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_sources() -> Sources:
    return builtin_sources(DataConfig(name="digits_lt"))


@pytest.fixture(scope="module")
def digits_written(digits_sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Written:
    out = tmp_path_factory.mktemp("digits")
    return out, write_digits(digits_sources["train"], out)


# ----------------------------------------------------------------------------------- raw accessors
def test_raw_image_gives_the_source_uint8_pixels() -> None:
    digits = load_digits()
    train_indices = digits_lt_split_indices(torch.as_tensor(digits.target), 50, 100.0, seed=0).train
    # The digits' 0..16 intensities, scaled as docs/shards.md says (np.round rounds half to even).
    expected = torch.as_tensor(np.round(digits.images * 255 / 16), dtype=torch.uint8)[train_indices].unsqueeze(1)
    train = build_data(DataConfig(name="digits_lt")).train_eval
    assert torch.equal(torch.stack([train.raw_image(i) for i in range(len(train))]), expected)

    synthetic = build_data(DataConfig(name="synthetic_lt", num_classes=3, max_per_class=5, image_size=8)).train_eval
    expected = (128 + 16 * synthetic.render(4)).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(synthetic.raw_image(4), expected)


# -------------------------------------------------------------------------------------- round trip
def test_round_trip_with_tarfile_is_bit_exact(digits_sources: Sources, digits_written: Written) -> None:
    out, index = digits_written
    source = digits_sources["train"]
    samples = samples_read_back(out / "train", index)

    assert sorted(samples) == [f"{i:09d}" for i in range(len(source))]
    for key, (label, ext, image) in samples.items():
        assert ext == "png"
        assert label == source.labels[int(key)]
        assert torch.equal(decoded_png(image), source.images.raw_image(int(key)))
    assert index["class_counts"] == source.class_counts == build_data(DataConfig(name="digits_lt")).class_counts


def test_round_trip_with_webdataset(digits_written: Written) -> None:
    out, index = digits_written
    expected = samples_read_back(out / "train", index)
    urls = [str(path) for path in shard_paths(out / "train", index)]
    dataset = wds.WebDataset(urls, shardshuffle=False)
    streamed = {sample["__key__"]: (int(sample["cls"]), "png", sample["png"]) for sample in dataset}
    assert streamed == expected


def test_members_point_at_exactly_the_image_bytes(digits_written: Written) -> None:
    out, index = digits_written
    for shard, path in zip(index["shards"], shard_paths(out / "train", index)):
        images = [(info, data) for info, data in read_tar(path) if not info.name.endswith(".cls")]
        assert [m[0] for m in shard["members"]] == [info.name.split(".")[0] for info, _ in images]
        with path.open("rb") as file:
            for (_, _, offset, size, ext), (info, data) in zip(shard["members"], images, strict=True):
                assert (offset, size, ext) == (info.offset_data, info.size, "png")
                file.seek(offset)
                assert file.read(size) == data
        # Fixed member metadata: the same plan gives the same bytes.
        metadata = {(info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname) for info, _ in read_tar(path)}
        assert metadata == {(0, 0o644, 0, 0, "", "")}


def test_index_checksums_sizes_and_fair_mix(digits_written: Written) -> None:
    out, index = digits_written
    *full, last = [shard["samples"] for shard in index["shards"]]
    assert set(full) == {DIGITS_PER_SHARD} and 0 < last <= DIGITS_PER_SHARD
    assert sum(full) + last == index["total_samples"]
    for shard, path in zip(index["shards"], shard_paths(out / "train", index)):
        assert shard["sha256"] == file_digest(path)
        assert len(shard["members"]) == shard["samples"]
        if shard["samples"] == DIGITS_PER_SHARD:
            assert len({member[1] for member in shard["members"]}) >= 3, f"{shard['name']} is no fair mix"
        sidecar = json.loads((out / "train" / f"{shard['name']}.json").read_text())
        assert sidecar["shard"] == shard
    assert json.loads((out / "train" / "index.json").read_text()) == index


def test_index_header_follows_the_contract(digits_sources: Sources, digits_written: Written) -> None:
    _, index = digits_written
    counts = exponential_profile(index["class_counts"][0], 10, 100.0)
    assert {k: v for k, v in index.items() if k not in ("shards", "plan_sha256")} == {
        "format": "allnc-shards",
        "writer_version": 1,
        "dataset": "digits_lt",
        "split": "train",
        "num_classes": 10,
        "class_names": [str(d) for d in range(10)],
        "class_counts": counts,
        "profile": {"kind": "exponential", "n_max": counts[0], "imbalance_ratio": 100.0},
        "seed": 0,
        "samples_per_shard": DIGITS_PER_SHARD,
        "total_samples": sum(counts),
        "image_shape": [1, 8, 8],
    }
    test = digits_sources["test"]
    assert test.class_counts == [50] * 10
    assert test.profile == {"kind": "exponential", "n_max": 50, "imbalance_ratio": 1.0}


# ------------------------------------------------------------------------------------ resumability
def test_rerun_repairs_a_damaged_write(digits_sources: Sources, digits_written: Written, tmp_path: Path) -> None:
    reference, index = digits_written
    damaged = tmp_path / "damaged"
    shutil.copytree(reference, damaged)
    split_dir = damaged / "train"
    (split_dir / "index.json").unlink()
    (split_dir / "train-000001.tar").unlink()
    (split_dir / "train-000001.tar.json").unlink()
    with (split_dir / "train-000003.tar").open("r+b") as file:
        file.truncate(1000)
    (split_dir / ".train-000004.tar.tmp-12345").write_bytes(b"half a shard")
    (split_dir / "train-000099.tar").write_bytes(b"from a run with other parameters")
    (split_dir / "train-000099.tar.json").write_text("{}")

    assert write_digits(digits_sources["train"], damaged) == index
    assert folder_digests(split_dir) == folder_digests(reference / "train")


def wait_for_first_shard(split_dir: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while not list(split_dir.glob("train-*.tar")):
        assert process.poll() is None, f"the writer ended before its first shard: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, f"no shard appeared in {split_dir}"
        time.sleep(0.002)


def test_rerun_after_a_killed_write_gives_identical_bytes(tmp_path: Path) -> None:
    killed = tmp_path / "killed" / "train"
    overrides = [f"data.{field}={value}" for field, value in SYNTHETIC_OVERRIDES.items()]
    command = [
        *(sys.executable, "-m", "allnc_dist.cli", "shards", "--out", str(killed.parent), "--dataset", "synthetic_lt"),
        *("--split", "train", "--samples-per-shard", str(SYNTHETIC_PER_SHARD), "--processes", "1", "--no-progress"),
        *overrides,
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_first_shard(killed, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    left = list(killed.glob("train-*.tar"))

    source = builtin_sources(DataConfig(name="synthetic_lt", **SYNTHETIC_OVERRIDES))["train"]
    reference = tmp_path / "reference"
    index = write_shards(source, reference, "train", SYNTHETIC_PER_SHARD, seed=0, progress=False)
    assert 1 <= len(left) < len(index["shards"]) and not (killed / "index.json").exists()

    assert write_shards(source, killed.parent, "train", SYNTHETIC_PER_SHARD, seed=0, progress=False) == index
    assert folder_digests(killed) == folder_digests(reference / "train")


def test_parallel_write_equals_inline(digits_sources: Sources, digits_written: Written, tmp_path: Path) -> None:
    reference, _ = digits_written
    write_digits(digits_sources["train"], tmp_path, processes=2)
    assert folder_digests(tmp_path / "train") == folder_digests(reference / "train")


def test_another_plan_over_a_finished_set_is_refused(
    digits_sources: Sources, digits_written: Written, tmp_path: Path
) -> None:
    reference, _ = digits_written
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    before = folder_digests(tmp_path / "train")
    with pytest.raises(OtherPlanError, match="seed 0 there, 1 now.*pick an empty output folder"):
        write_shards(digits_sources["train"], tmp_path, "train", DIGITS_PER_SHARD, seed=1, progress=False)
    with pytest.raises(OtherPlanError, match="samples_per_shard 50 there, 64 now"):
        write_shards(digits_sources["train"], tmp_path, "train", 64, seed=0, progress=False)
    assert folder_digests(tmp_path / "train") == before


def test_an_unfinished_set_of_another_plan_is_replaced(
    digits_sources: Sources, digits_written: Written, tmp_path: Path
) -> None:
    reference, _ = digits_written
    write_shards(digits_sources["train"], tmp_path, "train", 20, seed=0, progress=False)
    (tmp_path / "train" / "index.json").unlink()  # as if that run had died before finishing
    write_digits(digits_sources["train"], tmp_path)
    assert folder_digests(tmp_path / "train") == folder_digests(reference / "train")


def test_a_failing_sample_names_shard_and_key(tmp_path: Path) -> None:
    for value in range(6):
        write_image(tmp_path / "images" / "c" / f"{value}.png", "PNG", value)
    source = imagefolder_source(tmp_path / "images")
    (tmp_path / "images" / "c" / "3.png").unlink()
    with pytest.raises(ShardWriteError, match=r"shard train-00000\d\.tar, key 000000003 \(c/3\.png\)"):
        write_shards(source, tmp_path / "out", "train", 2, seed=0, processes=2, progress=False)


# ------------------------------------------------------------------------------------ file sources
def test_imagefolder_copies_bytes_in_torchvision_order(tmp_path: Path) -> None:
    root = tmp_path / "images"
    files = {
        "b_cat/z.jpg": write_image(root / "b_cat" / "z.jpg", "JPEG", 10),
        "b_cat/sub/a.PNG": write_image(root / "b_cat" / "sub" / "a.PNG", "PNG", 20),
        "a_dog/x.JPEG": write_image(root / "a_dog" / "x.JPEG", "JPEG", 30),
        "a_dog/y.png": write_image(root / "a_dog" / "y.png", "PNG", 40),
    }
    (root / "a_dog" / "notes.txt").write_text("not an image")
    source = imagefolder_source(root)
    torchvision_order = [(Path(p).relative_to(root).as_posix(), label) for p, label in ImageFolder(str(root)).samples]
    assert list(zip(source.paths, source.labels)) == torchvision_order
    assert source.class_names == ["a_dog", "b_cat"] and source.profile == {"kind": "as_listed"}

    index = write_shards(source, tmp_path / "out", "train", 3, seed=0, progress=False)
    samples = samples_read_back(tmp_path / "out" / "train", index)
    assert index["image_shape"] is None and index["dataset"] == "imagefolder"
    for i, (path, label) in enumerate(torchvision_order):
        assert samples[f"{i:09d}"] == (label, "png" if path.lower().endswith("png") else "jpg", files[path])


def test_image_list_source(tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = [write_image(root / "train" / f"n{k}" / f"{k}.JPEG", "JPEG", 50 * k) for k in range(3)]
    list_file = tmp_path / "train.txt"
    list_file.write_text("train/n2/2.JPEG 2\ntrain/n0/0.JPEG 0\n\ntrain/n1/1.JPEG 0\n")
    source = image_list_source(list_file, root)
    assert source.labels == [2, 0, 0] and source.class_names == ["0", "1", "2"]
    assert source.class_counts == [2, 0, 1]

    index = write_shards(source, tmp_path / "out", "train", 2, seed=0, progress=False)
    assert samples_read_back(tmp_path / "out" / "train", index) == {
        "000000000": (2, "jpg", files[2]),
        "000000001": (0, "jpg", files[0]),
        "000000002": (0, "jpg", files[1]),
    }
    assert index["dataset"] == "imagenet_lt" and index["profile"] == {"kind": "as_listed"}

    names = tmp_path / "names.txt"
    names.write_text("tench\ngoldfish\nshark\n")
    assert image_list_source(list_file, root, names).class_names == ["tench", "goldfish", "shark"]


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        ("train/n0/0.JPEG 0\ntrain/n1/1.JPEG\n", ValueError, r"bad\.txt line 2: expected '<image path> <label>'"),
        ("train/n0/0.JPEG 0\n\ntrain/n1/1.JPEG one\n", ValueError, r"bad\.txt line 3: the label 'one' is not"),
        ("train/n0/0.JPEG -1\n", ValueError, r"bad\.txt line 1: the label '-1'"),
        ("train/n0/0.JPEG 0\ntrain/n9/9.JPEG 1\n", FileNotFoundError, r"bad\.txt line 2: image file .*n9/9\.JPEG"),
        ("train/n0/0.gif 0\n", ValueError, r"bad\.txt line 1: train/n0/0\.gif is not a \.jpg"),
    ],
)
def test_image_list_errors_name_file_and_line(tmp_path: Path, content: str, error: type, match: str) -> None:
    for k in range(2):
        write_image(tmp_path / "train" / f"n{k}" / f"{k}.JPEG", "JPEG", k)
    list_file = tmp_path / "bad.txt"
    list_file.write_text(content)
    with pytest.raises(error, match=match):
        image_list_source(list_file, tmp_path)


def inat_json(path: Path, categories: list[dict] | None, annotations: list[tuple[int, int]]) -> Path:
    content = {
        "images": [{"id": image_id, "file_name": f"train_val2018/{image_id}.jpg"} for image_id, _ in annotations],
        "annotations": [{"image_id": image_id, "category_id": category} for image_id, category in annotations],
    }
    if categories is not None:
        content["categories"] = categories
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("category_ids", "categories_listed", "labels", "names"),
    [
        ([1, 0, 2, 1], True, [1, 0, 2, 1], ["Aves 0", "Aves 1", "Aves 2"]),
        ([17, 5, 3, 17], True, [2, 1, 0, 2], ["Aves 3", "Aves 5", "Aves 17"]),
        ([17, 5, 3, 17], False, [2, 1, 0, 2], ["3", "5", "17"]),
    ],
)
def test_inat_source(
    tmp_path: Path, category_ids: list[int], categories_listed: bool, labels: list[int], names: list[str]
) -> None:
    image_ids = [101, 7, 55, 3]
    files = [write_image(tmp_path / "train_val2018" / f"{i}.jpg", "JPEG", i) for i in image_ids]
    categories = [{"id": c, "name": f"Aves {c}"} for c in sorted(set(category_ids), reverse=True)]
    listed = categories if categories_listed else None
    json_file = inat_json(tmp_path / "train2018.json", listed, list(zip(image_ids, category_ids)))
    source = inat_source(json_file, tmp_path)
    assert source.labels == labels and source.class_names == names

    index = write_shards(source, tmp_path / "out", "train", 3, seed=0, progress=False)
    samples = samples_read_back(tmp_path / "out" / "train", index)
    assert samples == {f"{i:09d}": (label, "jpg", data) for i, (label, data) in enumerate(zip(labels, files))}
    assert index["dataset"] == "inaturalist2018"


def test_inat_missing_image_is_named(tmp_path: Path) -> None:
    json_file = inat_json(tmp_path / "val2018.json", None, [(9, 0)])
    with pytest.raises(FileNotFoundError, match=r"val2018\.json, image id 9: image file .*train_val2018/9\.jpg"):
        inat_source(json_file, tmp_path)


# ------------------------------------------------------------------------------------------- CIFAR
def test_cifar_source_round_trip(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path)
    cfg = DataConfig(name="cifar10_lt", root=str(tmp_path), imbalance_ratio=10)
    with pytest.warns(UserWarning, match="not the standard"):
        sources = builtin_sources(cfg)
    with pytest.warns(UserWarning, match="not the standard"):
        data = build_data(cfg)
    splits = {
        "train": (data.train_eval.images, data.class_counts),
        "test": (data.test.images, [FAKE_PER_CLASS] * 10),
    }
    for split, (images, class_counts) in splits.items():
        index = write_shards(sources[split], tmp_path / "out", split, 64, seed=0, progress=False)
        samples = samples_read_back(tmp_path / "out" / split, index)
        assert len(samples) == len(images) and index["class_counts"] == class_counts
        for key, (label, _, image) in samples.items():
            assert torch.equal(decoded_png(image), images[int(key)])
            assert label == sources[split].labels[int(key)]
        assert index["image_shape"] == [3, 32, 32] and index["class_names"][0] == "name0"


# --------------------------------------------------------------------------------------------- CLI
def test_cli_writes_both_splits_of_a_builtin_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arguments = ["--out", str(tmp_path), "--samples-per-shard", "100", "--no-progress", "data.imbalance_ratio=50"]
    assert main(["shards", *arguments]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tmp_path / "train"), str(tmp_path / "test")]
    train = json.loads((tmp_path / "train" / "index.json").read_text())
    assert train["class_counts"] == exponential_profile(train["class_counts"][0], 10, 50.0)
    assert f"{len(train['shards'])} shards, {train['total_samples']} samples, 10 classes" in lines[0]


def test_cli_reports_bad_inputs_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.txt"
    assert main(["shards", "--out", str(tmp_path), "--list", str(missing), "--image-root", str(tmp_path)]) == 3
    assert str(missing) in capsys.readouterr().err  # input data: status 3 (allnc_dist/errors.py)
    assert main(["shards", "--out", str(tmp_path), "--list", str(missing)]) == 2
    assert "--image-root" in capsys.readouterr().err
