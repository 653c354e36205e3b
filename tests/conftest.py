"""Test-wide settings: keep every tool's state out of $HOME and every listener on loopback."""

import atexit
import os
import shutil
import tempfile


def _process_folder(prefix: str, parent: str = "/tmp") -> str:
    """A temp folder for this test process (the pytest process, or one xdist worker), removed when
    it exits."""
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


_STATE = _process_folder("allnc-test-state-")
# One Ray temp folder per process (short: Ray's socket paths live in it), inside one the user set:
# `ray.init()` joins the cluster whose address `ray start` left in its temp folder instead of
# starting a private one.
os.environ["RAY_TMPDIR"] = _process_folder("ray-", os.environ.get("RAY_TMPDIR", "/tmp"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_STATE, "matplotlib"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(_STATE, "torch_extensions"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
# One intra-op thread in every process of the suite (this one, jobs, Ray workers): the workloads are
# small and often several processes share the few cores, where threads only wait on each other
# (a step can take 10x longer; bench/gpu_check.py pins one thread on CPU for the same reason).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Runs log to MLflow by default (sqlite:///mlflow.db in the working directory); tests log to a
# session-wide SQLite store instead, never to the repository.
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.path.join(_STATE, 'mlflow.db')}"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory):
    """digits-LT written as shards by the shard writer: train/ (304 samples) and test/ (500)."""
    from allnc_dist.config import DataConfig  # noqa: PLC0415
    from allnc_dist.shards import builtin_sources, write_shards  # noqa: PLC0415

    out = tmp_path_factory.mktemp("digits_shards")
    for split, source in builtin_sources(DataConfig(name="digits_lt")).items():
        write_shards(source, out, split, 100, seed=0, progress=False)  # 304 -> shards of 100, 100, 100, 4
    return out
