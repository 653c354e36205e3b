"""cluster/up.sh, cluster/join.sh and cluster/down.sh with real processes: a Ray cluster of two nodes
on one machine, jobs submitted through the Ray job server, and a clean stop.

The head (Ray head and MLflow server) runs at 127.0.0.2, a second Ray node at 127.0.0.3; each offers
one CPU, so a 2-worker job puts one worker on each node. The second node runs in a mount namespace of
its own where the head's folder (its state, the jobs' --out folders) is hidden under an empty tmpfs
and the file system is read-only: it sees only the "shared" folder, which stands in for NFS (Ray
Train's storage, data given with --data), and writes only there and in its own scratch. One cluster is started for the whole module (about 25 s on 2 cores)
and always stopped at the end, by the sessions it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from listeners import listening_sockets

from allnc_dist.config import load_config
from allnc_dist.engine.faults import FAULT_ENV
from allnc_dist.engine.trainer import TrainResult, train_locally
from allnc_dist.tracking import RunDirectory

ROOT = Path(__file__).parents[1]
UP = ROOT / "cluster" / "up.sh"
DOWN = ROOT / "cluster" / "down.sh"
JOIN = ROOT / "cluster" / "join.sh"

HEAD_HOST, NODE_HOST = "127.0.0.2", "127.0.0.3"
# The demo job as the README submits it (AllNC and CE; 16 epochs each instead of 60, to save CI time),
# with checkpoints inside epochs too (every 50 steps; an epoch is 4 steps of 2 x 32), which a job that
# writes its own shards must accept; "{out}" becomes a folder of the head, "{shared}" the shared folder.
JOB_ARGS = ("--out", "{out}", "--storage-path", "{shared}/ray", "train.epochs=16", "train.checkpoint_every_steps=50")
MAX_JOB_LOG_LINES = 60  # up to and including the results table
# A run whose batches depend on the global batch only (as tests/test_ray_engine.py's): 2 workers x 16
# on two nodes must train as one process with batch 32.
DETERMINISTIC = ("method.preset=allnc_paper", "model.norm=none", "model.width=8", "data.augment=none",
                 "method.gbbn.rebalance=logit_adjust",
                 "train.epochs=2", "train.eval_every=2", "train.checkpoint_every=1")
# 2 epochs of 9 steps, a checkpoint every 5 steps, and room for restarts: an elastic run (1 to 2
# workers) whose second node is killed once the first checkpoint is registered, and joins again.
# (Longer runs drift apart from the one-process run by float rounding, amplified by training: 1e-7
# of the loss after 2 epochs, 2e-4 after 3, with or without a restart.)
NODE_LOSS_JOB_ARGS = ("--out", "{out}", "--storage-path", "{shared}/ray", "--methods", "allnc_paper",
                      "data.batch_size=16",
                      *DETERMINISTIC, "train.checkpoint_every_steps=5", "distributed.max_failures=3",
                      "distributed.min_workers=1", "distributed.resize_check_s=2", "tracking.experiment=node_loss")
# The elastic job's environment. On one worker the run checkpoints at step 10 and then waits after
# step 11 until Ray Train stops it to grow the group, so that the group grows back from that
# checkpoint however long the node takes to return. Right after the node dies, Ray Train may try the
# old size once more, before the cluster knows the node is gone; it gives up after this many seconds
# (60 by default).
ELASTIC_JOB_ENV = {FAULT_ENV: "hold_after_step=11,hold_below_workers=2", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20"}
# A job reading a shard set with a corrupt shard; it must fail and say which shard.
BAD_DATA_JOB_ARGS = ("--data", "{data}", "--out", "{out}", "--storage-path", "{shared}/ray", "--methods", "ce",
                     "train.epochs=1", "model.width=8", "tracking.experiment=corrupt")
RAY_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+")  # a line Ray forwards from one of its processes

SERVER_TIMEOUT = "120"  # seconds up.sh waits for each server to answer
RAY_WORKER_PORTS = range(10002, 20000)  # Ray's default worker port range: ours must stay out

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("ss", "setsid", "unshare")),
                       reason="needs `ss` (iproute2), `setsid` and `unshare` (util-linux)"),
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


def _port_free(port: int) -> bool:
    return all(p != port for _, p, _ in listening_sockets())


def _run(cmd: list[str], env: dict, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@dataclass
class Cluster:
    state: Path  # the head's state folder (in its private folder)
    node_state: Path  # the second node's
    head: Path  # the head's private folder: hidden from the second node
    shared: Path  # seen by both nodes
    env: dict  # the test's environment for up.sh / down.sh
    node_env: dict  # join.sh's
    client_env: dict = field(default_factory=dict)  # plus what env.sh exports
    ports: dict = field(default_factory=dict)
    up_output: str = ""

    def sessions(self) -> dict[str, int]:
        return {"ray": int((self.state / "ray.sid").read_text()),
                "mlflow": int((self.state / "mlflow.pid").read_text()),
                "node": int((self.node_state / "node.sid").read_text())}

    def recorded_pids(self) -> set[int]:
        pids = {int(p) for p in (self.state / "ray.pids").read_text().split()}
        return pids | {int((self.state / "mlflow.pid").read_text())}


def _cluster_env(tmp: Path, ray_tmp: Path, ports: dict) -> dict:
    env = {
        **os.environ,
        **ports,
        "PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "ALLNC_START_TIMEOUT": SERVER_TIMEOUT,
        "ALLNC_NUM_CPUS": "1",  # one worker per node
        "ALLNC_OBJECT_STORE_BYTES": str(200 * 1024**2),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # conftest.py points these at a temporary folder for the session; reusing it shares
        # DeepSpeed's JIT-built ops with the other tests instead of compiling them again.
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or str(tmp / "matplotlib"),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(tmp / "torch_extensions"),
    }
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN_PATH",
                "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        env.pop(var, None)  # nothing from an outer cluster: the scripts set them
    return env


# The second node's mount namespace: the head's folder ($1) becomes an empty read-only tmpfs, and the
# whole file system read-only but for the folders that follow ($3...), the node's own (its state,
# scratch and Ray's temp folder) and the shared one; then join.sh ($2) runs.
NODE_VIEW = ('head=$1 join=$2; shift 2; mount -t tmpfs -o ro tmpfs "$head" && '
             'for folder in "$@"; do mount --bind "$folder" "$folder" || exit 1; done && '
             'mount -o remount,bind,ro / && exec bash "$join"')


def _join_second_node(c: Cluster) -> None:
    """join.sh for the second node, in a mount namespace where it can write only to its own folders and
    the shared one (/dev/shm, memory, stays writable): a write anywhere else fails, so every job on the
    cluster checks that no node writes outside the folders declared shared or node-local."""
    c.node_state.mkdir(parents=True, exist_ok=True)
    shutil.copy(c.state / "ray_auth_token", c.node_state / "ray_auth_token")  # as a user copies it
    writable = [c.node_env["TMPDIR"], c.node_env["RAY_TMPDIR"], c.shared]
    join = _run(["unshare", "--mount", "--propagation", "private", "bash", "-c", NODE_VIEW, "node-view", c.head, JOIN,
                 *writable], c.node_env, timeout=300)
    assert join.returncode == 0, "cluster/join.sh failed: " + _describe(join)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # Ray's Unix socket paths are limited to 107 bytes: keep its temp folders short.
    ray_tmp, node_ray_tmp = (Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")) for prefix in ("ray_", "ray2_"))
    names = ["ALLNC_RAY_PORT", "ALLNC_DASHBOARD_PORT", "ALLNC_RAY_CLIENT_PORT",
             "ALLNC_DASHBOARD_AGENT_PORT", "ALLNC_MLFLOW_PORT"]
    node_names = ["ALLNC_NODE_MANAGER_PORT", "ALLNC_OBJECT_MANAGER_PORT", "ALLNC_RUNTIME_ENV_AGENT_PORT",
                  "ALLNC_DASHBOARD_AGENT_PORT", "ALLNC_DASHBOARD_AGENT_GRPC_PORT", "ALLNC_METRICS_PORT"]
    free = list(map(str, _free_ports(len(names) + len(node_names))))
    ports, node_ports = dict(zip(names, free)), dict(zip(node_names, free[len(names):]))
    head, shared = tmp / "head", tmp / "shared"
    shared.mkdir()
    # Every Ray process of both nodes inherits RAY_ADDRESS. Ray's own actors that look their cluster up
    # without it scan this machine's processes, and would also find the private Ray of a test running
    # beside this one (pytest-xdist): they then fail with "Found multiple active Ray instances".
    address = f"{HEAD_HOST}:{ports['ALLNC_RAY_PORT']}"
    env = {**_cluster_env(tmp, ray_tmp, ports), "ALLNC_HOST": HEAD_HOST, "ALLNC_CLUSTER_DIR": str(head / "state"),
           "RAY_ADDRESS": address}
    node_env = {**_cluster_env(tmp, node_ray_tmp, node_ports), "ALLNC_HOST": NODE_HOST, "ALLNC_HEAD": address,
                "RAY_ADDRESS": address, "ALLNC_CLUSTER_DIR": str(tmp / "node" / "state"),
                # The node's scratch (its copy of built-in shards, a rank 0's run folder) and caches.
                "TMPDIR": str(tmp / "node"), "MPLCONFIGDIR": str(tmp / "node" / "matplotlib"),
                "TORCH_EXTENSIONS_DIR": str(tmp / "node" / "torch_extensions")}
    c = Cluster(state=head / "state", node_state=tmp / "node" / "state", head=head, shared=shared, env=env,
                node_env=node_env, ports={k: int(v) for k, v in ports.items()})
    try:
        up = _run(["bash", UP], env, timeout=600)
        assert up.returncode == 0, "cluster/up.sh failed: " + _describe(up)
        c.up_output = up.stdout
        _join_second_node(c)
        # What a user gets from `source .cluster/env.sh`, read back through bash itself.
        dump = _run(["bash", "-c", f'source "{c.state / "env.sh"}" && env -0'], env, timeout=60)
        assert dump.returncode == 0, _describe(dump)
        c.client_env = dict(kv.split("=", 1) for kv in dump.stdout.split("\0") if "=" in kv)
        yield c
    finally:
        for stop_env in (node_env, env):
            down = _run(["bash", DOWN], stop_env, timeout=300)
            if down.returncode != 0:
                print("cluster/down.sh failed at teardown: " + _describe(down), file=sys.stderr)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(node_ray_tmp, ignore_errors=True)


def _submit(c: Cluster, args: tuple[str, ...], out: Path, data: Path | None = None
            ) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit` of jobs/digits_lt.py; returns the submit process and the job's logs."""
    argv = [a.format(out=out, data=data, shared=c.shared) for a in args]
    proc = _run(["ray", "job", "submit", "--working-dir", ROOT, "--", "python", "jobs/digits_lt.py", *argv],
                c.client_env, timeout=900)
    match = re.search(r"Job '(raysubmit_\w+)'", proc.stdout + proc.stderr)
    assert match, "no job id in the output of ray job submit: " + _describe(proc)
    logs = _run(["ray", "job", "logs", match.group(1)], c.client_env, timeout=120)
    assert logs.returncode == 0, _describe(logs)
    return proc, logs.stdout


def test_env_file_points_at_the_heads_servers(cluster):
    env = cluster.client_env
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://{HEAD_HOST}:{cluster.ports['ALLNC_DASHBOARD_PORT']}"
    assert env["RAY_ADDRESS"] == f"{HEAD_HOST}:{cluster.ports['ALLNC_RAY_PORT']}"
    assert env["MLFLOW_TRACKING_URI"] == f"http://{HEAD_HOST}:{cluster.ports['ALLNC_MLFLOW_PORT']}"
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


def _mlflow_runs(c: Cluster, experiment: str) -> list[dict]:
    """The runs of an experiment on the cluster's MLflow server, through its REST API."""
    server = c.client_env["MLFLOW_TRACKING_URI"]
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}") as r:
        experiment_id = json.loads(r.read())["experiment"]["experiment_id"]
    search = urllib.request.Request(f"{server}/api/2.0/mlflow/runs/search", method="POST",
                                    data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                    headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(search) as r:
        return json.loads(r.read()).get("runs", [])


def _mlflow_artifacts(c: Cluster, run_id: str) -> list[str]:
    """The top-level artifact paths of a run, listed by the server that stores them."""
    server = c.client_env["MLFLOW_TRACKING_URI"]
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}") as r:
        return sorted(f["path"] for f in json.loads(r.read()).get("files", []))


def _job_ended(c: Cluster, job_id: str) -> str | None:
    """How the job ended ("succeeded", "failed", "stopped"), or None while it runs."""
    proc = _run(["ray", "job", "status", job_id], c.client_env, timeout=120)
    match = re.search(rf"Job '{job_id}' (succeeded|failed|was stopped)", proc.stdout + proc.stderr)
    return match.group(1).removeprefix("was ") if match else None


def _job_logs(c: Cluster, job_id: str) -> str:
    return _run(["ray", "job", "logs", job_id], c.client_env, timeout=120).stdout


def _wait_for(what: str, condition, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _kill_session(sid: int) -> None:
    """SIGKILL every process of a session: a machine that loses power, as far as the others see."""
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_for(f"session {sid} to die", lambda: not _session_pids(sid), 30, 0.2)


def test_an_elastic_run_loses_a_node_goes_on_with_one_worker_grows_back_and_trains_as_one_process(cluster, tmp_path):
    """An elastic job (1 to 2 workers) on 2 nodes. The job writes digits-LT as shards on the head; the
    second node cannot see them and writes its own copy (checked against the head's digest); the
    workers meet over TCP. Once the first checkpoint is in the shared storage, every process of the
    second node is killed: Ray Train restarts the run on the one worker left, which resumes inside the
    epoch with the whole global batch. The node joins again, the group grows back to 2 workers from
    the last checkpoint, and the run's outputs come back to the head through Ray's storage. The result
    equals one process with twice the batch: no sample was read twice or skipped across the resizes."""
    out = cluster.head / "node_loss"
    argv = [a.format(out=out, shared=cluster.shared) for a in NODE_LOSS_JOB_ARGS]
    started = time.monotonic()
    runtime_env = json.dumps({"env_vars": ELASTIC_JOB_ENV})
    submit = _run(["ray", "job", "submit", "--no-wait", "--working-dir", ROOT, "--runtime-env-json", runtime_env,
                   "--", "python", "jobs/digits_lt.py", *argv], cluster.client_env, timeout=300)
    job_id = re.search(r"Job '(raysubmit_\w+)'", submit.stdout + submit.stderr).group(1)
    # Registered by Ray Train's controller, not only uploaded: a restart resumes from it.
    snapshot = cluster.shared / "ray" / "node_loss-allnc_paper" / "checkpoint_manager_snapshot.json"
    _wait_for("the first checkpoint", lambda: snapshot.is_file() and "checkpoint_dir_name" in snapshot.read_text(), 300)
    timeline = {"first checkpoint": time.monotonic() - started}
    _kill_session(cluster.sessions()["node"])
    timeline["node killed"] = time.monotonic() - started
    _wait_for("the run to go on with one worker", lambda: "restart 1, on 1 worker(s)" in _job_logs(cluster, job_id),
              300, 2.0)
    timeline["resumed on 1 worker"] = time.monotonic() - started
    _join_second_node(cluster)
    timeline["node joined again"] = time.monotonic() - started
    _wait_for("the group to grow back", lambda: "(restart 2" in _job_logs(cluster, job_id), 300, 2.0)
    timeline["resumed on 2 workers"] = time.monotonic() - started
    status = _wait_for("the job to end", lambda: _job_ended(cluster, job_id), 600, 2.0)
    timeline["finished"] = time.monotonic() - started
    logs = _job_logs(cluster, job_id)
    print("elastic node-loss timeline (s since submit): " + ", ".join(f"{k} {v:.1f}" for k, v in timeline.items()))
    assert status == "succeeded", logs

    report = json.loads((out / "allnc_paper" / "report.json").read_text())
    assert sorted(report["worker_nodes"]) == [HEAD_HOST, NODE_HOST] and report["workers"] == 2
    assert report["restarts"] >= 2
    (resumed,) = [line for line in logs.splitlines() if "allnc_paper: resumed from" in line][:1]
    pattern = r"at epoch (\d+), step ([1-9]\d*) \(restart 1, on 1 worker\(s\) instead of 2\)"
    epoch, step = map(int, re.search(pattern, resumed).groups())
    # The run folder, as rank 0 left it in the last checkpoint: rows up to the checkpoint, the resumes
    # (restored, not reset: the reader's place in the epoch at the new world size, the class-mean
    # trackers' updates), and every later row once (9 steps of 2 x 16, or 1 x 32, per epoch).
    rows = RunDirectory(out / "allnc_paper").read_metrics()
    shrunk, grown = [row for row in rows if row["split"] == "resume"][-2:]
    assert (shrunk["epoch"], shrunk["step"], shrunk["workers"], shrunk["written_by_workers"]) == (epoch, step, 1, 2)
    assert shrunk["streams"]["uniform"] == {"epoch": epoch, "position": (step - 9 * epoch) * 32}
    assert shrunk["tracker_steps"] and all(steps == step for steps in shrunk["tracker_steps"])
    assert grown["workers"] == 2 and grown["step"] >= step and grown["restarts"] == shrunk["restarts"] + 1
    if grown["step"] % 9:
        assert grown["streams"]["uniform"]["position"] == (grown["step"] % 9) * 16
    assert [row["epoch"] for row in rows if row["split"] == "train"] == [1, 2]
    assert list(Path(cluster.node_env["TMPDIR"]).glob("allnc-shards/*/train/index.json"))  # the node's own copy
    (run,) = _mlflow_runs(cluster, "node_loss")  # one run, continued by the restarted workers
    tags = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
    assert run["info"]["status"] == "FINISHED" and tags["restarts"] == str(report["restarts"]), (run["info"], tags)
    # Through the server, from whichever node rank 0 ended on (its own disk would not do).
    assert {"model", "plots", "report.json"} <= set(_mlflow_artifacts(cluster, run["info"]["run_id"]))
    assert not (out / "allnc_paper" / "mlflow_fallback.jsonl").exists()

    overrides = [a for a in NODE_LOSS_JOB_ARGS[7:] if not a.startswith(("train.checkpoint_every_steps", "distributed.",
                                                                         "tracking."))]
    cfg = load_config(ROOT / "jobs" / "configs" / "digits_lt.yaml",
                      ["data.source=shards", f"data.shards={out / 'shards'}", "distributed.num_workers=1",
                       *overrides, "data.batch_size=32", "tracking.enabled=false"])
    single = train_locally(cfg, tmp_path / "single")
    two_nodes = TrainResult.load(out / "allnc_paper")
    print("elastic run (2, 1, 2 workers) against 1 process x 2B: max |difference| classifier "
          f"{(single.evaluation.classifier - two_nodes.evaluation.classifier).abs().max():.2e}, class means "
          f"{(single.evaluation.class_means - two_nodes.evaluation.class_means).abs().max():.2e}; accuracy "
          f"{report['metrics']['acc_top1']:.2f} % against {single.report['metrics']['acc_top1']:.2f} %")
    assert single.report["steps"] == report["steps"] == 18
    torch.testing.assert_close(single.evaluation.classifier, two_nodes.evaluation.classifier, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(single.evaluation.class_means, two_nodes.evaluation.class_means, rtol=1e-4, atol=1e-5)
    assert single.report["metrics"]["acc_top1"] == pytest.approx(report["metrics"]["acc_top1"], abs=1e-9)


def test_a_job_started_on_the_head_without_ray_address_joins_the_cluster(cluster):
    """`python jobs/...` on a head node without RAY_ADDRESS: `ray start` recorded the cluster's address
    in its temp folder (cluster/up.sh gives it RAY_TMPDIR), and the job joins that cluster instead of
    starting a private Ray of its own."""
    env = {k: v for k, v in cluster.client_env.items() if k != "RAY_ADDRESS"}
    code = ("import ray; from allnc_dist.engine.ray_driver import ensure_ray; ensure_ray(1); "
            "print(sorted(node['NodeManagerAddress'] for node in ray.nodes() if node['Alive']))")
    proc = _run([sys.executable, "-c", code], env, timeout=120)
    assert proc.returncode == 0, _describe(proc)
    assert proc.stdout.splitlines()[-1] == str([HEAD_HOST, NODE_HOST]), _describe(proc)


def test_job_submit_runs_the_demo_and_its_log_reads_in_one_screen(cluster):
    out = cluster.head / "job_out"
    proc, logs = _submit(cluster, JOB_ARGS, out)
    assert proc.returncode == 0, "ray job submit failed: " + _describe(proc)
    lines = logs.splitlines()
    table_rows = [i for i, line in enumerate(lines) if line.startswith("| ")]
    assert table_rows and lines[table_rows[0]].startswith("| method"), "no results table in the job's logs:\n" + logs
    assert table_rows[-1] + 1 <= MAX_JOB_LOG_LINES, f"{table_rows[-1] + 1} lines up to the table:\n" + logs
    # A few progress lines per run from rank 0 alone, no per-report lines, warnings or errors.
    assert sum("allnc: epoch" in line for line in lines) <= 13 and sum("ce: epoch" in line for line in lines) <= 13
    for noise in ("TrainingReport", "FutureWarning", "Traceback", "PreemptionWatcher", "untested optimizer",
                  "MLflow tracking at"):
        assert noise not in logs, logs
    # The job wrote its own shards and checkpointed inside epochs from them, into the shared storage.
    from allnc_dist.engine.checkpoint import load_checkpoint

    run = out / "allnc"
    assert "source: shards" in (run / "config.yaml").read_text()
    assert (out / "shards" / "train" / "index.json").is_file()
    assert json.loads((run / "report.json").read_text())["workers"] == 2
    assert [line.split("|")[1].strip() for line in lines[table_rows[0] + 2:table_rows[-1] + 1]] == ["AllNC", "CE"]
    for name in ("heatmap_classifier.png", "heatmap_class_means.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [load_checkpoint(path)["step"] for path in (cluster.shared / "ray").glob("*-allnc/**/checkpoint.pt")]
    assert any(step % 4 for step in steps) and max(steps) == 64, steps


def test_job_with_a_corrupt_shard_ends_with_one_line_naming_it(cluster, digits_shards):
    from broken_shards import flip_a_byte

    shard = flip_a_byte(digits_shards, cluster.shared / "corrupt_shards")
    proc, logs = _submit(cluster, BAD_DATA_JOB_ARGS, cluster.head / "bad_job_out", cluster.shared / "corrupt_shards")
    assert proc.returncode != 0, "a job reading a corrupt shard succeeded: " + _describe(proc)
    # Ray forwards its own processes' logs; the job itself adds one line, and no traceback.
    own = [line for line in logs.splitlines() if not RAY_PREFIX.match(line)]
    assert not any("Traceback" in line for line in own), logs
    assert any(line.startswith(f"digits_lt.py: checksum mismatch: {shard} ") for line in own), logs
    # Its MLflow run, on the cluster's server, says so.
    (run,) = _mlflow_runs(cluster, "corrupt")
    assert run["info"]["status"] == "FAILED", run["info"]


def test_the_heads_servers_listen_on_its_address_only(cluster):
    """Runs after the jobs, so that Ray's workers and agents are up too. Listeners are attributed to
    this cluster by process: everything in the sessions up.sh and join.sh started (other Ray
    instances may run on the machine at the same time).

    The job server (Ray's dashboard) and MLflow listen on the head's address and nowhere else. Ray's
    GCS and its other gRPC servers (raylets, object managers, workers), and the TCPStore of a
    cross-node rendezvous, listen on every interface whenever the cluster may hold more than one
    node: Ray binds 127.0.0.1 only for a one-node cluster on 127.0.0.1 (tests/test_ray_engine.py
    checks that case). docs/scale.md tells the firewall to close them to all but the cluster's nodes."""
    ours = set().union(*(_session_pids(sid) for sid in cluster.sessions().values()))
    mine = [(host, port) for host, port, pids in listening_sockets() if pids & ours]
    assert mine, "ss -ltnp attributes no listening socket to the cluster's processes"
    for name in ("ALLNC_DASHBOARD_PORT", "ALLNC_MLFLOW_PORT"):
        assert {host for host, port in mine if port == cluster.ports[name]} == {HEAD_HOST}, (name, mine)
    assert cluster.ports["ALLNC_RAY_PORT"] in {port for _, port in mine}
    assert NODE_HOST in {host for host, _ in mine}  # the second node's sockets were attributed too


def test_down_stops_everything_and_is_idempotent(cluster):
    pids = cluster.recorded_pids()
    sessions = cluster.sessions()
    for env in (cluster.node_env, cluster.env):
        down = _run(["bash", DOWN], env, timeout=300)
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
