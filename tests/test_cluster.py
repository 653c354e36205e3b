"""cluster/up.sh and cluster/down.sh with real processes: a Ray head and an MLflow server on
loopback, jobs submitted through the Ray job server, and a clean stop.

One cluster is started for the whole module (about 20 s on 2 cores) and always stopped at the end.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
UP = ROOT / "cluster" / "up.sh"
DOWN = ROOT / "cluster" / "down.sh"

# The demo job as the README submits it (AllNC and CE, 60 epochs each), with checkpoints inside epochs
# too (every 50 steps; an epoch is 4 steps of 2 x 32), which a job that writes its own shards must
# accept; "{out}" becomes a folder under tmp.
JOB_ARGS = ("--out", "{out}", "train.checkpoint_every_steps=50")
MAX_JOB_LOG_LINES = 60  # up to and including the results table
# A job reading a shard set with a corrupt shard; it must fail and say which shard.
BAD_DATA_JOB_ARGS = ("--data", "{data}", "--out", "{out}", "--methods", "ce", "train.epochs=1", "model.width=8",
                     "tracking.experiment=corrupt")
RAY_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+")  # a line Ray forwards from one of its processes

SERVER_TIMEOUT = "120"  # seconds up.sh waits for each server to answer
RAY_WORKER_PORTS = range(10002, 20000)  # Ray's default worker port range: ours must stay out

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("ss") is None or shutil.which("setsid") is None,
                       reason="needs `ss` (iproute2) and `setsid` (util-linux)"),
]


def _venv_bin() -> Path:
    venv = ROOT / ".venv" / "bin"
    return venv if (venv / "ray").exists() else Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1, outside Ray's worker port range."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in ports and port not in RAY_WORKER_PORTS:
            ports.append(port)
    return ports


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # after "(comm)": state ppid pgrp session


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie holds nothing and waits only to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _session_pids(sid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session_of(int(entry.name)) == sid and _alive(int(entry.name)):
            pids.add(int(entry.name))
    return pids


def _listeners() -> list[tuple[str, int, set[int]]]:
    """(host, port, owning pids) of every listening TCP socket, from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        host, port = cols[3].rsplit(":", 1)
        host = host.strip("[]").split("%", 1)[0]
        pids = {int(p) for p in re.findall(r"pid=(\d+)", " ".join(cols[5:]))}
        rows.append((host, int(port), pids))
    return rows


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # "*" and the like: every interface
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _port_free(port: int) -> bool:
    return all(p != port for _, p, _ in _listeners())


def _run(cmd: list[str], env: dict, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@dataclass
class Cluster:
    state: Path
    tmp: Path
    env: dict  # the test's environment for up.sh / down.sh
    client_env: dict = field(default_factory=dict)  # plus what env.sh exports
    ports: dict = field(default_factory=dict)
    up_output: str = ""

    def sessions(self) -> dict[str, int]:
        return {"ray": int((self.state / "ray.sid").read_text()),
                "mlflow": int((self.state / "mlflow.pid").read_text())}

    def recorded_pids(self) -> set[int]:
        pids = {int(p) for p in (self.state / "ray.pids").read_text().split()}
        return pids | {int((self.state / "mlflow.pid").read_text())}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # Ray's Unix socket paths are limited to 107 bytes: keep its temp folder short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray_", dir="/tmp"))
    names = ["ALLNC_RAY_PORT", "ALLNC_DASHBOARD_PORT", "ALLNC_RAY_CLIENT_PORT",
             "ALLNC_DASHBOARD_AGENT_PORT", "ALLNC_MLFLOW_PORT"]
    ports = dict(zip(names, map(str, _free_ports(len(names)))))
    env = {
        **os.environ,
        **ports,
        "PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "ALLNC_CLUSTER_DIR": str(tmp / "state"),
        "ALLNC_START_TIMEOUT": SERVER_TIMEOUT,
        "ALLNC_NUM_CPUS": "4",
        "ALLNC_OBJECT_STORE_BYTES": str(200 * 1024**2),
        "RAY_TMPDIR": str(ray_tmp),
        "GLOO_SOCKET_IFNAME": "lo",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # conftest.py points these at a temporary folder for the session; reusing it shares
        # DeepSpeed's JIT-built ops with the other tests instead of compiling them again.
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or str(tmp / "matplotlib"),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(tmp / "torch_extensions"),
    }
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)  # nothing from an outer cluster
    c = Cluster(state=tmp / "state", tmp=tmp, env=env, ports={k: int(v) for k, v in ports.items()})
    try:
        up = _run(["bash", UP], env, timeout=600)
        assert up.returncode == 0, "cluster/up.sh failed: " + _describe(up)
        c.up_output = up.stdout
        # What a user gets from `source .cluster/env.sh`, read back through bash itself.
        dump = _run(["bash", "-c", f'source "{c.state / "env.sh"}" && env -0'], env, timeout=60)
        assert dump.returncode == 0, _describe(dump)
        c.client_env = dict(kv.split("=", 1) for kv in dump.stdout.split("\0") if "=" in kv)
        yield c
    finally:
        down = _run(["bash", DOWN], env, timeout=300)
        if down.returncode != 0:
            print("cluster/down.sh failed at teardown: " + _describe(down), file=sys.stderr)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _submit(c: Cluster, args: tuple[str, ...], out: Path, data: Path | None = None
            ) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit` of jobs/digits_lt.py; returns the submit process and the job's logs."""
    argv = [a.format(out=out, data=data) for a in args]
    proc = _run(["ray", "job", "submit", "--working-dir", ROOT, "--", "python", "jobs/digits_lt.py", *argv],
                c.client_env, timeout=900)
    match = re.search(r"Job '(raysubmit_\w+)'", proc.stdout + proc.stderr)
    assert match, "no job id in the output of ray job submit: " + _describe(proc)
    logs = _run(["ray", "job", "logs", match.group(1)], c.client_env, timeout=120)
    assert logs.returncode == 0, _describe(logs)
    return proc, logs.stdout


def test_env_file_points_at_loopback_servers(cluster):
    env = cluster.client_env
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{cluster.ports['ALLNC_DASHBOARD_PORT']}"
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{cluster.ports['ALLNC_RAY_PORT']}"
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{cluster.ports['ALLNC_MLFLOW_PORT']}"
    assert env["RAY_AUTH_MODE"] == "token"
    assert Path(env["RAY_AUTH_TOKEN_PATH"]) == cluster.state / "ray_auth_token"
    assert (cluster.state / "ray_auth_token").read_text().strip()
    assert env["RAY_TMPDIR"] == cluster.env["RAY_TMPDIR"]
    assert "source" in cluster.up_output and "env.sh" in cluster.up_output


def test_up_twice_is_a_no_op(cluster):
    before = cluster.sessions()
    pids_before = cluster.recorded_pids()
    again = _run(["bash", UP], cluster.env, timeout=600)
    assert again.returncode == 0, _describe(again)
    assert "already running" in again.stdout
    assert cluster.sessions() == before
    assert cluster.recorded_pids() == pids_before
    # Still exactly one GCS server and one MLflow server for this state folder.
    ray_cmds = [Path(f"/proc/{p}/cmdline").read_bytes() for p in _session_pids(before["ray"])]
    assert sum(b"gcs_server" in cmd for cmd in ray_cmds) == 1


def test_job_submit_runs_the_demo_and_its_log_reads_in_one_screen(cluster):
    proc, logs = _submit(cluster, JOB_ARGS, cluster.tmp / "job_out")
    assert proc.returncode == 0, "ray job submit failed: " + _describe(proc)
    lines = logs.splitlines()
    table_rows = [i for i, line in enumerate(lines) if line.startswith("| ")]
    assert table_rows and lines[table_rows[0]].startswith("| method"), "no results table in the job's logs:\n" + logs
    assert table_rows[-1] + 1 <= MAX_JOB_LOG_LINES, f"{table_rows[-1] + 1} lines up to the table:\n" + logs
    # A few progress lines per run from rank 0 alone, no per-report lines, warnings or errors.
    assert sum("allnc: epoch" in line for line in lines) <= 13 and sum("ce: epoch" in line for line in lines) <= 13
    for noise in ("TrainingReport", "FutureWarning", "Traceback", "PreemptionWatcher", "untested optimizer"):
        assert noise not in logs, logs
    # The job wrote its own shards and checkpointed inside epochs from them.
    from allnc_dist.engine.checkpoint import load_checkpoint

    run = cluster.tmp / "job_out" / "allnc"
    assert "source: shards" in (run / "config.yaml").read_text()
    assert (cluster.tmp / "job_out" / "shards" / "train" / "index.json").is_file()
    assert json.loads((run / "report.json").read_text())["workers"] == 2
    assert [line.split("|")[1].strip() for line in lines[table_rows[0] + 2:table_rows[-1] + 1]] == ["AllNC", "CE"]
    for name in ("heatmap_classifier.png", "heatmap_class_means.png"):
        assert (cluster.tmp / "job_out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [load_checkpoint(path)["step"] for path in run.glob("ray/**/checkpoint.pt")]
    assert any(step % 4 for step in steps) and max(steps) == 240, steps


def test_job_with_a_corrupt_shard_ends_with_one_line_naming_it(cluster, digits_shards):
    from broken_shards import flip_a_byte

    shard = flip_a_byte(digits_shards, cluster.tmp / "corrupt_shards")
    proc, logs = _submit(cluster, BAD_DATA_JOB_ARGS, cluster.tmp / "bad_job_out", cluster.tmp / "corrupt_shards")
    assert proc.returncode != 0, "a job reading a corrupt shard succeeded: " + _describe(proc)
    # Ray forwards its own processes' logs; the job itself adds one line, and no traceback.
    own = [line for line in logs.splitlines() if not RAY_PREFIX.match(line)]
    assert not any("Traceback" in line for line in own), logs
    assert any(line.startswith(f"digits_lt.py: checksum mismatch: {shard} ") for line in own), logs
    # Its MLflow run, on the cluster's server, says so.
    server = cluster.client_env["MLFLOW_TRACKING_URI"]
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=corrupt") as r:
        experiment_id = json.loads(r.read())["experiment"]["experiment_id"]
    search = urllib.request.Request(f"{server}/api/2.0/mlflow/runs/search", method="POST",
                                    data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                    headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(search) as r:
        (run,) = json.loads(r.read())["runs"]
    assert run["info"]["status"] == "FAILED", run["info"]


def test_every_listener_is_on_loopback(cluster):
    """Runs after the jobs, so that Ray's workers and agents are up too. Listeners are attributed
    to this cluster by process: everything in the sessions up.sh started (other Ray instances may
    run on the machine at the same time)."""
    ours = set().union(*(_session_pids(sid) for sid in cluster.sessions().values()))
    mine = [(host, port) for host, port, pids in _listeners() if pids & ours]
    assert mine, "ss -ltnp attributes no listening socket to the cluster's processes"
    exposed = [(host, port) for host, port in mine if not _is_loopback(host)]
    assert not exposed, f"listening beyond loopback: {exposed}"
    # The attribution found the servers we configured.
    for name in ("ALLNC_RAY_PORT", "ALLNC_DASHBOARD_PORT", "ALLNC_RAY_CLIENT_PORT", "ALLNC_MLFLOW_PORT"):
        assert cluster.ports[name] in {port for _, port in mine}, (name, mine)


def test_down_stops_everything_and_is_idempotent(cluster):
    pids = cluster.recorded_pids()
    sessions = cluster.sessions()
    down = _run(["bash", DOWN], cluster.env, timeout=300)
    assert down.returncode == 0, _describe(down)
    deadline = time.monotonic() + 30  # killed processes may take a moment to be reaped
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.5)
    assert not [p for p in pids if _alive(p)], "recorded processes survived down.sh"
    for sid in sessions.values():
        assert not _session_pids(sid), f"processes left in session {sid}"
    while time.monotonic() < deadline and not all(map(_port_free, cluster.ports.values())):
        time.sleep(0.5)
    busy = {name: port for name, port in cluster.ports.items() if not _port_free(port)}
    assert not busy, f"ports still listening after down.sh: {busy}"
    again = _run(["bash", DOWN], cluster.env, timeout=120)
    assert again.returncode == 0, _describe(again)
    assert "not running" in again.stdout
