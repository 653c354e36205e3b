"""Errors of the `allnc` command line: each kind (config, input data, tracking server) ends the real
command with its exit status and one line on stderr naming the cause and the file or server, with no
traceback unless --debug; plus the unwrapping of errors that reach the driver through Ray."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from allnc_dist.cli import main
from allnc_dist.config import ConfigError
from allnc_dist.errors import EXIT_CONFIG, EXIT_DATA, EXIT_TRACKING, error_line, exit_code_for, report_errors, root_cause
from allnc_dist.shards import CorruptShardError
from allnc_dist.tracking.server import free_port
from broken_shards import break_a_label, break_the_index, flip_a_byte
from cli import ROOT, allnc, only_error_line

CONFIG = ROOT / "jobs" / "configs" / "digits_lt.yaml"
ONE_EPOCH = ["train.epochs=1", "model.width=8", "tracking.enabled=false"]


def train_on(shards: Path, *overrides: str):
    return allnc("train", "--config", CONFIG, "--run-dir", shards.parent / "run", "data.source=shards",
                 f"data.shards={shards}", *ONE_EPOCH, *overrides, check=False)


def allnc_here(capsys, *args) -> subprocess.CompletedProcess:
    """The `allnc` command's own entry (`main`) in this process: the same parsing and error mapping as
    the console script, without a process start and torch import per case (one case per kind runs
    as a real process)."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["allnc", *args], code, out, err)


def train_here(capsys, shards: Path, *overrides: str) -> subprocess.CompletedProcess:
    return allnc_here(capsys, "train", "--config", CONFIG, "--run-dir", shards.parent / "run", "data.source=shards",
                      f"data.shards={shards}", *ONE_EPOCH, *overrides)


# ------------------------------------------------------------------------------------------- config
def test_a_bad_field_names_the_field_and_the_fields_allowed_there():
    line = only_error_line(allnc("check", "method.hycon.temperature=1", "optim.lr=-1", check=False), EXIT_CONFIG)
    assert "method.hycon.temperature: unknown field (allowed here: negatives," in line
    assert "optim.lr: Input should be greater than 0" in line


def test_a_missing_config_file_is_named(tmp_path):
    line = only_error_line(allnc("check", "--config", tmp_path / "nope.yaml", check=False), EXIT_CONFIG)
    assert line == f"allnc: config file not found: {tmp_path / 'nope.yaml'}"


def test_debug_prints_the_traceback_before_the_line():
    proc = allnc("check", "--debug", "optim.lr=-1", check=False)
    assert proc.returncode == EXIT_CONFIG and "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("allnc: invalid config: optim.lr:")


# --------------------------------------------------------------------------------------------- data
def test_a_corrupt_shard_is_refused_by_its_checksum(digits_shards, tmp_path):
    shard = flip_a_byte(digits_shards, tmp_path / "shards")
    line = only_error_line(train_on(tmp_path / "shards"), EXIT_DATA)
    assert line.startswith(f"allnc: checksum mismatch: {shard} has sha256 ")


def test_an_unreadable_index_is_named(digits_shards, tmp_path, capsys):
    index = break_the_index(digits_shards, tmp_path / "shards")
    line = only_error_line(train_here(capsys, tmp_path / "shards"), EXIT_DATA)
    assert line.startswith(f"allnc: {index}: cannot read index.json")


def test_a_bad_label_names_the_shard_and_the_key(digits_shards, tmp_path, capsys):
    shard, key = break_a_label(digits_shards, tmp_path / "shards")
    line = only_error_line(train_here(capsys, tmp_path / "shards", "data.verify_checksums=false"), EXIT_DATA)
    assert f"bad sample in shard {shard}, key {key}:" in line and "[bad_label]" in line


def test_a_missing_list_file_is_named(tmp_path):
    missing = tmp_path / "missing.txt"  # the shards command's own process: its import path differs from train's
    proc = allnc("shards", "--out", tmp_path / "out", "--list", missing, "--image-root", tmp_path, check=False)
    assert only_error_line(proc, EXIT_DATA) == f"allnc: No such file or directory: {missing}"


def test_a_listed_image_that_is_missing_is_named_with_its_line(tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("cats/1.png 0\n")
    proc = allnc_here(capsys, "shards", "--out", tmp_path / "out", "--list", listing, "--image-root", tmp_path)
    line = only_error_line(proc, EXIT_DATA)
    assert line.startswith(f"allnc: {listing}") and f"image file {tmp_path / 'cats/1.png'} does not exist" in line


def test_overrides_after_the_flags_reach_the_sweeps_config(capsys):
    # The README's `allnc sweep FILE --num-samples 4 train.epochs=10`: argparse fills the positional
    # overrides once, after SWEEP_YAML; the override after the flag must still reach the config.
    assert main(["sweep", str(ROOT / "jobs" / "configs" / "sweeps" / "digits_allnc.yaml"), "--num-samples", "4",
                 "train.epochs=0"]) == EXIT_CONFIG
    assert "train.epochs: Input should be greater than or equal to 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- tracking
def test_an_unreachable_tracking_server_stops_training_before_it_starts(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    proc = allnc("train", "--config", CONFIG, "--run-dir", tmp_path / "run", "train.epochs=1",
                 f"tracking.mlflow_uri={uri}", check=False)
    assert only_error_line(proc, EXIT_TRACKING).startswith(f"allnc: tracking server {uri} does not answer")
    assert not (tmp_path / "run").exists()


def test_a_sweep_stops_on_an_unreachable_tracking_server_before_ray_starts(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = allnc_here(capsys, "sweep", ROOT / "jobs" / "configs" / "sweeps" / "digits_allnc.yaml", "--out",
                      tmp_path / "sweep", f"tracking.mlflow_uri={uri}")
    assert only_error_line(proc, EXIT_TRACKING).startswith(f"allnc: tracking server {uri} does not answer")
    assert not (tmp_path / "sweep").exists()


# ------------------------------------------------------------------------------ the mapping itself
CORRUPT = CorruptShardError("checksum mismatch: /data/train-000001.tar has sha256 ab, index.json says cd")


def test_a_worker_groups_error_is_reported_by_the_first_worker_error_of_a_known_kind():
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    # Rank 0 stopped on the corrupt shard; rank 1 only lost its peer.
    group = WorkerGroupError("2 workers failed", {1: CORRUPT, 0: RuntimeError("gloo: connection closed by peer")})
    assert root_cause(group) is CORRUPT and exit_code_for(group) == EXIT_DATA
    assert root_cause(ControllerError(group)) is CORRUPT
    assert exit_code_for(WorkerGroupError("1 worker failed", {0: KeyError("bug")})) is None


def test_a_data_loader_workers_error_is_reported_by_its_original_message():
    # torch's DataLoader re-raises a worker's exception with the worker's traceback as its message.
    wrapped = CorruptShardError(
        "Caught CorruptShardError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "reader.py", line 1, in read\nallnc_dist.shards.index.CorruptShardError: ' + str(CORRUPT) + "\n"
    )
    assert error_line(wrapped) == str(CORRUPT)


def fail_with(error: Exception) -> int:
    raise error


def test_errors_of_no_known_kind_propagate_with_their_traceback(capsys):
    with pytest.raises(KeyError):
        report_errors("allnc", False, fail_with, KeyError("a bug"))
    assert report_errors("allnc", False, fail_with, ConfigError("invalid config:\n  a: x\n  b: y")) == EXIT_CONFIG
    assert capsys.readouterr().err == "allnc: invalid config: a: x; b: y\n"
