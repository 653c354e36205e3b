"""The distributed engine's driver: a Ray Train (V2) `TorchTrainer` whose workers run
`ray_runtime.train_loop_per_worker` (the training loop on a `RayDeepSpeedRuntime`).

- **Resources.** One worker per GPU (`distributed.gpus_per_worker`), or CPU workers holding
  `distributed.cpus_per_worker` logical CPUs each.
- **Restarts.** `FailureConfig(max_failures=distributed.max_failures)` restarts the worker group after a
  worker dies; the workers then resume from the latest reported checkpoint, and rank 0 says so. Fitting again with the
  same Ray run name and storage path (the same run directory) resumes too.
- **Elastic training.** With `distributed.min_workers`, Ray Train restarts a group that lost workers
  with as many as still fit (at least min_workers) and grows it back when room returns. Each worker
  takes its share of the unchanged global batch and continues the epoch where the checkpoint left
  it, so the samples seen stay those of one fixed-size run (engine/streams.py).
- **Rendezvous.** Workers that all run on one node meet through a `file://` store, which opens no
  port (Ray's default TCPStore listens on every interface) and whose file goes when the group stops;
  across nodes, through Ray's TCP rendezvous.
  The choice follows where the workers are placed, at every (re)start.
- **Several nodes.** Ray Train's storage must be declared shared (`distributed.storage_path`) and
  MLflow a server; a built-in dataset the driver wrote is written again on the nodes that lack it
  (`data/builtin_shards.py`); the run's outputs come back with its last checkpoint.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..config import ConfigError, DistributedConfig, RunConfig
from ..tracking import RunDirectory, open_run_tracker, resolve_tracking_uri
from .checkpoint import OUTPUTS_FOLDER
from .trainer import TrainResult

LOOPBACK = "127.0.0.1"
logger = logging.getLogger(__name__)


def ensure_ray(num_cpus_needed: float) -> None:
    """Connect to the cluster RAY_ADDRESS names, or to the one `ray start` started on this machine (a
    job launched on a head node), or else start a private one-node Ray on 127.0.0.1."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or cluster_started_here()
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # Every Ray process of this private instance binds loopback only. Ray reads this switch when it
    # is imported (here and in the processes it starts); the driver may have imported it already.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray counts logical CPUs: a small machine still gets room for the controller and every worker.
    # The dashboard serves the State API, which Ray Train needs to clean up after a stopped run.
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus_needed) + 1), _node_ip_address=LOOPBACK,
             include_dashboard=True, dashboard_host=LOOPBACK, log_to_driver=True)


def cluster_started_here() -> str | None:
    """The address of a running cluster that `ray start` started on this machine, as it recorded it in
    its temp folder: Ray's default (<$RAY_TMPDIR or /tmp>/ray), or $RAY_TMPDIR itself, which
    cluster/up.sh passes as --temp-dir. Ray's own `address="auto"` reads the first record too, but
    would also join any other Ray instance it finds running."""
    from ray._private import services  # noqa: PLC0415

    running = services.find_gcs_addresses()
    for temp_dir in (None, os.environ.get("RAY_TMPDIR")):
        address = services.find_bootstrap_address(temp_dir)
        if address in running:
            return address
    return None


def this_node_id() -> str:
    """The Ray node this process runs on (a worker's, or the driver's)."""
    import ray  # noqa: PLC0415

    return ray.get_runtime_context().get_node_id()


def rendezvous_config(mode: str, run_name: str):
    """A TorchConfig whose workers meet, at every (re)start, according to where they run: all on one
    node, through a fresh file in that node's temp folder (no port opened: Ray's TCPStore listens on
    every interface), removed when the group shuts down; across nodes, through Ray's TCP rendezvous at
    rank 0's node address."""
    import ray  # noqa: PLC0415
    from ray.train.torch import TorchConfig  # noqa: PLC0415
    from ray.train.torch.config import (  # noqa: PLC0415
        _set_torch_distributed_env_vars,
        _setup_torch_process_group,
        _TorchBackend,
    )

    class NodeAwareRendezvous(_TorchBackend):
        # The file store the running group met through. The store deletes its file only when every
        # process closes it, which a worker Ray stops (or one alone, which never closes its group)
        # does not do: without this, each start would leave a file on the node.
        store_file: str | None = None

        def on_start(self, worker_group, backend_config) -> None:
            nodes = len(set(worker_group.execute(this_node_id)))
            if mode == "tcp" or (mode == "auto" and nodes > 1):
                super().on_start(worker_group, backend_config)
                return
            if nodes > 1:
                raise ConfigError(f"distributed.rendezvous=file needs every worker on one node; these "
                                  f"{len(worker_group)} workers run on {nodes} nodes (use auto or tcp)")
            use_gpu = worker_group.get_resources_per_worker().get("GPU", 0) > 0
            backend = backend_config.backend or ("nccl" if use_gpu else "gloo")
            folder = worker_group.execute_single(0, tempfile.gettempdir)
            self.store_file = str(Path(folder) / rendezvous_file_name(run_name))
            url = f"file://{self.store_file}"
            worker_group.execute(_set_torch_distributed_env_vars)
            ray.get([
                worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend, world_rank=i,
                                                  world_size=len(worker_group), init_method=url,
                                                  timeout_s=backend_config.timeout_s)
                for i in range(len(worker_group))
            ])

        def on_shutdown(self, worker_group, backend_config) -> None:
            try:
                super().on_shutdown(worker_group, backend_config)
            finally:
                if self.store_file is not None:
                    remove_on_any_worker(worker_group, self.store_file)
                    self.store_file = None

    @dataclass
    class NodeAwareTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return NodeAwareRendezvous

    return NodeAwareTorchConfig()


def rendezvous_file_prefix(run_name: str) -> str:
    """What the names of run `run_name`'s file stores start with (one per start of its worker group)."""
    return f"allnc-rendezvous-{run_name}-"


def rendezvous_file_name(run_name: str) -> str:
    """The file store's name for one start of run `run_name`'s worker group."""
    return rendezvous_file_prefix(run_name) + uuid.uuid4().hex


def remove_on_any_worker(worker_group, path: str) -> None:
    """Remove `path` through the first worker of the group still alive (all run on the node that holds
    it). Failing that, say so: raising would hide the error that stopped the group."""
    from ray.exceptions import RayActorError  # noqa: PLC0415

    for rank in range(len(worker_group)):
        try:
            worker_group.execute_single(rank, remove_file, path)
            return
        except RayActorError:
            continue
    logger.warning("the rendezvous file %s stays on its node: no worker of the group is left to remove it", path)


def remove_file(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def alive_node_addresses() -> list[str]:
    import ray  # noqa: PLC0415

    return [node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")]


def check_multi_node_storage(cfg: RunConfig, nodes: list[str]) -> None:
    """On a cluster of several nodes, rank 0 and the restarted workers may run on any of them: Ray
    Train's storage must be declared shared, and MLflow a server every node reaches."""
    if len(nodes) < 2:
        return
    where = f"this Ray cluster has {len(nodes)} nodes"
    if not cfg.distributed.storage_path:
        raise ConfigError(f"{where}, and Ray Train's checkpoints would go to the run folder on this node: set "
                          "distributed.storage_path (--storage-path) to a folder every node mounts (NFS) or a URI "
                          "Ray Train supports (s3://, gs://)")
    if not cfg.tracking.enabled:
        return
    uri = cfg.tracking.mlflow_uri or ""
    if urlparse(uri).scheme not in ("http", "https"):
        raise ConfigError(f"{where}, and tracking.mlflow_uri={uri} is a store on this node while rank 0 may run on "
                          "another: log to an MLflow server (http://..., cluster/up.sh starts one)")
    host = urlparse(uri).hostname or ""
    if is_loopback(host) and not all(is_loopback(address) for address in nodes):
        raise ConfigError(f"{where}, and tracking.mlflow_uri={uri} is a loopback address the other nodes do not "
                          "reach: use the server's address on the cluster network")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def storage_location(storage_path: str | None, run_dir: Path) -> str:
    """Ray Train's storage: a URI (s3://, gs://, ...) as given, a path (local, or a mounted shared
    folder) made absolute, and by default `<run dir>/ray`."""
    if not storage_path:
        return str(run_dir / "ray")
    if "://" in storage_path:
        return storage_path
    return str(Path(storage_path).resolve())


def quiet_ray_train() -> None:
    """Settings Ray Train passes from this driver to its controller and workers. Its print patch
    would send every worker print twice (to the console and through the logger). Its preemption
    watcher (a restart ahead of a node's announced drain) logs an error from the controller at every
    start; a lost node is survived without it, through FailureConfig's restart from the last
    checkpoint. Setting either variable in the job's environment overrides this."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def ray_run_name(run_dir: Path) -> str:
    """Ray's run name for a run directory: the same directory always maps to the same Ray run."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{run_dir.parent.name}-{run_dir.name}").strip("-")


def fit_on_ray(cfg: RunConfig, run_dir: str | Path, callbacks: list | None = None,
               parent_run_id: str | None = None) -> TrainResult:
    """Train `cfg` on Ray Train workers; the run directory ends up as the local engine's does.

    `callbacks` go to Ray Train's RunConfig (a sweep passes `TuneReportCallback()`); the MLflow run
    nests under `parent_run_id` when one is given."""
    from ray.train import FailureConfig  # noqa: PLC0415
    from ray.train import RunConfig as RayRunConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    from .ray_runtime import train_loop_per_worker  # noqa: PLC0415

    if cfg.data.source != "shards":
        raise ValueError("the Ray engine streams shards: set data.source=shards and data.shards (see `allnc shards`)")
    d = cfg.distributed
    run_dir = Path(run_dir).resolve()
    cfg = cfg.model_copy(deep=True)
    cfg.tracking.mlflow_uri = resolve_tracking_uri(cfg.tracking.mlflow_uri)  # the same store from every node
    # The driver opens (or finds again) the MLflow run: it outlives worker-group restarts, so every
    # restart continues this one run, which rank 0 logs to; and it marks the run FAILED if the workers fail.
    tracker = open_run_tracker(cfg, RunDirectory(run_dir), parent_run_id=parent_run_id)
    mlflow_run_id = tracker.run_id if tracker is not None else None
    storage = storage_location(d.storage_path, run_dir)
    resources = {"GPU": d.gpus_per_worker} if d.gpus_per_worker > 0 else {}
    resources["CPU"] = d.cpus_per_worker
    ensure_ray(d.num_workers * d.cpus_per_worker)
    nodes = alive_node_addresses()
    check_multi_node_storage(cfg, nodes)
    quiet_ray_train()
    name = ray_run_name(run_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "run_dir": str(run_dir), "mlflow_run_id": mlflow_run_id,
                           # A rank 0 on another node keeps the run folder in its own scratch (ray_runtime.py).
                           "driver_node_id": this_node_id(), "fit_id": uuid.uuid4().hex},
        scaling_config=scaling_config(d, resources),
        run_config=RayRunConfig(name=name, storage_path=storage,
                                failure_config=FailureConfig(max_failures=d.max_failures), callbacks=callbacks),
        torch_config=rendezvous_config(d.rendezvous, name),
    )
    try:
        result = trainer.fit()  # Ray Train V2 raises a failed run's error here
        if result.error is not None:
            raise result.error
    except BaseException as exc:
        # Not over a run rank 0 ended: a sweep's scheduler may stop a trial on its last report.
        if tracker is not None and not tracker.has_ended():
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    take_outputs(result.checkpoint, run_dir)
    return TrainResult.load(run_dir)


def scaling_config(d: DistributedConfig, resources: dict):
    """Ray Train's ScalingConfig: `num_workers` workers, or with `min_workers` an elastic group that
    Ray Train (re)starts with as many workers as the cluster has room for, between the two, and grows
    while it runs (checked every `resize_check_s`). Every start resumes from the last checkpoint."""
    from ray.train import ScalingConfig  # noqa: PLC0415

    workers = d.num_workers if d.min_workers is None else (d.min_workers, d.num_workers)
    elastic = {} if d.min_workers is None else {"elastic_resize_monitor_interval_s": d.resize_check_s}
    return ScalingConfig(num_workers=workers, use_gpu=d.gpus_per_worker > 0, resources_per_worker=resources, **elastic)


def take_outputs(checkpoint, run_dir: Path) -> None:
    """Copy the run's outputs from its last checkpoint (in Ray's storage) into `run_dir` on this node:
    rank 0 wrote them on its own node, which may not be this one."""
    with checkpoint.as_directory() as folder:
        outputs = RunDirectory(Path(folder) / OUTPUTS_FOLDER)
        if outputs.report_path.is_file():
            outputs.copy_outputs(run_dir)
