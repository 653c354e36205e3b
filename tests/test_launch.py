"""The job entry points (`jobs/*.py`, allnc_dist/launch.py): one validated config per method, checked as
the run it becomes (a Ray job streams the shards it writes of a built-in dataset), the built-in dataset
resolved into shards once, and errors reported as `allnc` reports them (allnc_dist/errors.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from allnc_dist.config import ConfigError, load_config
from allnc_dist.data import builtin_shards
from allnc_dist.data.builtin_shards import resolve_shards
from allnc_dist.errors import EXIT_CONFIG, EXIT_DATA, EXIT_TRACKING
from allnc_dist.launch import job_configs, parse_arguments, parser
from allnc_dist.tracking.server import free_port
from broken_shards import flip_a_byte
from cli import ROOT, only_error_line

CONFIG = ROOT / "jobs" / "configs" / "digits_lt.yaml"
SMALL = ["--methods", "ce", "train.epochs=1", "model.width=8", "tracking.enabled=false"]


def job_args(*argv: str):
    return parse_arguments(parser("a job"), list(argv))


def digits_job(*argv, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "jobs/digits_lt.py", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------- configs
def test_a_ray_job_validates_its_configs_as_the_shard_streaming_runs_they_become(tmp_path):
    configs, out = job_configs(CONFIG, job_args("--out", str(tmp_path), "train.checkpoint_every_steps=10"), "allnc,ce")
    assert list(configs) == ["allnc", "ce"] and out == tmp_path
    assert [cfg.train.checkpoint_every_steps for cfg in configs.values()] == [10, 10]
    with pytest.raises(ConfigError, match="train.checkpoint_every_steps needs a run that streams shards"):
        job_configs(CONFIG, job_args("--local", "train.checkpoint_every_steps=10"), "ce")


def test_zero_3_applies_to_every_method_of_a_job():
    configs, _ = job_configs(CONFIG, job_args("--methods", "allnc,ce", "--zero-stage", "3"), None)
    assert [cfg.distributed.zero_stage for cfg in configs.values()] == [3, 3]


def test_min_workers_makes_every_method_of_a_job_elastic():
    configs, _ = job_configs(CONFIG, job_args("--methods", "allnc,ce", "--num-workers", "4", "--min-workers", "2",
                                              "data.batch_size=12"), None)
    assert [list(cfg.distributed.worker_counts()) for cfg in configs.values()] == [[2, 3, 4], [2, 3, 4]]
    configs, _ = job_configs(CONFIG, job_args("--methods", "ce", "--num-workers", "1..2"), None)
    assert list(configs["ce"].distributed.worker_counts()) == [1, 2]
    with pytest.raises(ConfigError, match="does not split evenly over 3 worker"):
        job_configs(CONFIG, job_args("--num-workers", "4", "--min-workers", "2"), None)  # 4 x 32


def test_overrides_may_follow_the_flags():
    args = job_args("optim.lr=0.02", "--local", "train.epochs=3", "--methods", "ce")
    assert args.local and args.methods == "ce" and args.overrides == ["optim.lr=0.02", "train.epochs=3"]


def test_a_built_in_dataset_is_written_once_and_every_config_reads_it(tmp_path, monkeypatch):
    configs, out = job_configs(CONFIG, job_args("--out", str(tmp_path / "job"), "train.checkpoint_every_steps=10"),
                               "allnc,ce")
    writes = []
    write = builtin_shards.write_builtin_shards
    monkeypatch.setattr(builtin_shards, "write_builtin_shards", lambda *a: writes.append(a) or write(*a))
    resolved = resolve_shards(configs, out)
    shards = (out / "shards").resolve()
    assert len(writes) == 1 and (shards / "train" / "index.json").is_file() and (shards / "test" / "index.json").is_file()
    for name, cfg in resolved.items():
        assert (cfg.data.source, cfg.data.shards, cfg.name) == ("shards", str(shards), name)
        assert cfg.train.checkpoint_every_steps == 10 and cfg.method == configs[name].method


def test_given_shards_are_kept_by_their_absolute_path(digits_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(digits_shards.parent)
    given = load_config(CONFIG, ["data.source=shards", f"data.shards={digits_shards.name}"])
    resolved = resolve_shards({"run": given}, tmp_path / "job")["run"]
    assert resolved.data.shards == str(digits_shards.resolve()) and not (tmp_path / "job").exists()


# ------------------------------------------------------------------------------ errors, in-process
def test_a_config_error_names_the_field():
    proc = digits_job("--local", *SMALL, "method.hycon.temperature=1")
    assert "method.hycon.temperature: unknown field" in only_error_line(proc, EXIT_CONFIG, "digits_lt.py")


def test_step_checkpoints_of_an_in_memory_run_are_refused_before_any_work(tmp_path):
    proc = digits_job("--local", "--out", tmp_path / "job", *SMALL, "train.checkpoint_every_steps=5")
    assert "needs a run that streams shards" in only_error_line(proc, EXIT_CONFIG, "digits_lt.py")
    assert not (tmp_path / "job").exists()


def test_a_corrupt_shard_names_the_file(digits_shards, tmp_path):
    shard = flip_a_byte(digits_shards, tmp_path / "shards")
    proc = digits_job("--local", "--data", tmp_path / "shards", "--out", tmp_path / "job", *SMALL)
    assert only_error_line(proc, EXIT_DATA, "digits_lt.py").startswith(f"digits_lt.py: checksum mismatch: {shard} ")


def test_an_unreachable_tracking_server_names_it(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = digits_job("--local", "--out", tmp_path / "job", "--methods", "ce", f"tracking.mlflow_uri={uri}",
                      "tracking.enabled=true")
    line = only_error_line(proc, EXIT_TRACKING, "digits_lt.py")
    assert line.startswith(f"digits_lt.py: tracking server {uri} does not answer")
