"""Send a run's params, metrics and artifacts to MLflow, without ever letting MLflow stop training.

``MlflowTracker`` wraps an explicit :class:`mlflow.tracking.MlflowClient` (no fluent/global state,
so several trackers can live in one process). Every call is guarded: when the tracking server
cannot be reached (or the store raises), the tracker warns once through this module's logger,
naming the URI and the error, and appends what it could not send to
``<fallback_dir>/mlflow_fallback.jsonl`` (one JSON line per call:
``{"kind": "params"|"metrics"|"artifact"|"status", "step": ..., "data": ..., "time": ...}``;
an artifact line records the local path).

Retry policy: after a connection failure the tracker is "offline" and does not contact the server
for ``retry_interval_s`` seconds (default 30 s); calls in that window go straight to the fallback
file, so a dead server costs at most one failed request per interval rather than one per step.
The first call after the interval tries the server again; if it answers, logging resumes there.
What went to the fallback file is not replayed. A call the server *answers* with a rejection
(an HTTP 4xx, e.g. a param re-logged with another value) is also written to the fallback file
but does not make the tracker go offline.

To keep one failed request short, the MLflow client's own retry is bounded through its
environment variables, set only when the user has not set them (they are read per request by
``mlflow.utils.rest_utils``): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` (MLflow's
defaults, 7 retries with factor 2 and a 120 s timeout, can block for minutes).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FALLBACK_NAME = "mlflow_fallback.jsonl"
MAX_PARAM_VALUE_LEN = 6000
PARAM_BATCH = 100
METRIC_BATCH = 1000

_CLIENT_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def flatten_config(cfg_dict: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> flat ``{"data.batch_size": "128"}``; lists as JSON, other leaves via str()."""
    flat: dict[str, str] = {}
    for key, value in cfg_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_config(value, prefix=f"{name}."))
            else:
                flat[name] = "{}"
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = str(value)
    return flat


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of ``metrics`` as floats (ints, bools, numpy scalars, 0-d tensors; NaN and
    inf pass); strings and other non-numbers are left out."""
    values: dict[str, float] = {}
    for k, v in metrics.items():
        if v is None or isinstance(v, (str, bytes)):
            continue
        try:
            values[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return values


def _sqlite_db_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


def _is_rejection(exc: BaseException) -> bool:
    """True when the store answered and refused the request (HTTP 4xx), rather than being unreachable."""
    try:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    if not isinstance(exc, MlflowException):
        return False
    try:
        return 400 <= int(exc.get_http_status_code()) < 500
    except Exception:  # noqa: BLE001
        return False


class MlflowTracker:
    """One MLflow run, logged through an explicit client; failures fall back to a local JSON-lines file.

    Call ``start()`` first; ``run_id`` then holds the MLflow run id (store it in the checkpoint and
    pass it back as ``run_id=`` to continue the same run after a resume).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        fallback_dir: Path,
        run_id: str | None = None,
        artifact_location: str | None = None,
        retry_interval_s: float = 30.0,
        parent_run_id: str | None = None,
    ) -> None:
        for name, value in _CLIENT_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.fallback_dir = Path(fallback_dir)
        self.fallback_path = self.fallback_dir / FALLBACK_NAME
        self.retry_interval_s = float(retry_interval_s)
        if artifact_location is None and (db := _sqlite_db_path(tracking_uri)) is not None:
            artifact_location = (db.parent / "mlartifacts").as_uri()
        self.artifact_location = artifact_location
        self._run_id = run_id
        # MLflow's UI nests a run under the run this tag names (a sweep's or an ablation's parent).
        self._tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
        self._system_monitor = None
        self._reopened = False  # a given run_id has been checked (and set RUNNING) on the store
        self._client = None
        self._warned = False
        self._ended = False  # finish() was called
        self._offline_since: float | None = None
        self._unsent = 0

    # ------------------------------------------------------------------------------------ state
    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def unsent(self) -> int:
        """How many calls went to the fallback file instead of MLflow."""
        return self._unsent

    # ------------------------------------------------------------------------------ public API
    def start(self) -> str | None:
        """Create the experiment if missing and the run (or reopen ``run_id``); returns the run id."""
        self._call("start", [], lambda: None)
        return self._run_id

    def log_params(self, flat: dict[str, Any]) -> None:
        params = {str(k): str(v)[:MAX_PARAM_VALUE_LEN] for k, v in flat.items()}
        if not params:
            return

        def send() -> None:
            from mlflow.entities import Param  # noqa: PLC0415

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), PARAM_BATCH):
                self._client.log_batch(self._run_id, params=items[i : i + PARAM_BATCH], synchronous=True)

        self._call("params", [(None, params)], send)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log the numeric values of ``metrics`` at ``step`` (strings and other non-numbers are skipped)."""
        self.log_metric_rows([(step, metrics)])

    def log_metric_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Log several steps' metrics in one request (e.g. an epoch's per-step losses)."""
        rows = [(int(step), values) for step, values in ((s, _numbers(m)) for s, m in rows) if values]
        if not rows:
            return

        def send() -> None:
            from mlflow.entities import Metric  # noqa: PLC0415

            ts = int(time.time() * 1000)
            items = [Metric(k, v, ts, step) for step, values in rows for k, v in values.items()]
            for i in range(0, len(items), METRIC_BATCH):
                self._client.log_batch(self._run_id, metrics=items[i : i + METRIC_BATCH], synchronous=True)

        self._call("metrics", rows, send)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("tags", [(None, tags)],
                   lambda: [self._client.set_tag(self._run_id, k, str(v)) for k, v in tags.items()])

    def start_system_metrics(self, interval_s: float, resume: bool = False) -> None:
        """Sample CPU, memory, disk, network (and GPU) into ``system/...`` metrics in a background
        thread (MLflow's monitor), until ``finish()``. It stops by itself if the store goes away."""
        if self._run_id is None or self._offline_since is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # noqa: PLC0415

        self._system_monitor = SystemMetricsMonitor(self._run_id, sampling_interval=interval_s,
                                                    resume_logging=resume, tracking_uri=self.tracking_uri)
        self._system_monitor.start()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        data = {"path": str(path.resolve()), "artifact_path": artifact_path}
        self._call("artifact", [(None, data)], lambda: self._client.log_artifact(self._run_id, str(path), artifact_path))

    def has_ended(self) -> bool:
        """Whether the run has ended on the server already (another process, such as the rank 0 a Ray
        driver logs through, may end it); False when the server cannot say."""
        if self._run_id is None or self._client is None:
            return False
        try:
            return self._client.get_run(self._run_id).info.status != "RUNNING"
        except Exception:  # noqa: BLE001 - an unreachable server: the caller ends the run (or its fallback)
            return False

    def finish(self, status: str = "FINISHED") -> str | None:
        """End the run; returns (and logs) where the fallback copy is when anything was not sent. The
        first call decides the status: an error after the run finished (a Ray worker stopped by a
        sweep's scheduler on its last report) does not turn it FAILED."""
        if self._ended:
            return None
        self._ended = True
        if self._system_monitor is not None:
            self._system_monitor.finish()
            self._system_monitor = None
        if self._run_id is not None:
            self._call("status", [(None, {"status": status})],
                       lambda: self._client.set_terminated(self._run_id, status))
        elif self._unsent:  # the store was never reached: there is no run to terminate
            self._fallback("status", None, {"status": status})
        if self._unsent == 0:
            return None
        msg = (
            f"MLflow ({self.tracking_uri}) did not receive {self._unsent} logging call(s); "
            f"a copy of them is in {self.fallback_path}"
        )
        logger.warning(msg)
        return msg

    # ------------------------------------------------------------------------------- internals
    def _ensure_run(self) -> None:
        if self._client is None:
            from mlflow.tracking import MlflowClient  # noqa: PLC0415

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        if self._run_id is not None:
            if not self._reopened:
                run = self._client.get_run(self._run_id)
                if run.info.status != "RUNNING":
                    self._client.update_run(self._run_id, status="RUNNING")
                self._reopened = True
            return
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = self._client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        else:
            exp_id = exp.experiment_id
        run = self._client.create_run(exp_id, run_name=self.run_name, tags=self._tags)
        self._run_id = run.info.run_id
        self._reopened = True

    def _call(self, kind: str, entries: list[tuple[int | None, Any]], send) -> None:
        """Run ``send``; on failure write each (step, data) entry to the fallback file."""
        if self._offline_since is not None and time.monotonic() - self._offline_since < self.retry_interval_s:
            for step, data in entries:
                self._fallback(kind, step, data)
            return
        try:
            self._ensure_run()
            send()
        except Exception as exc:  # noqa: BLE001 - tracking must never kill training
            if not _is_rejection(exc):
                self._offline_since = time.monotonic()
            if not self._warned:
                self._warned = True
                logger.warning(
                    "MLflow tracking at %s failed (%s: %s); training continues, unsent records go to %s",
                    self.tracking_uri,
                    type(exc).__name__,
                    str(exc)[:500],
                    self.fallback_path,
                )
            for step, data in entries:
                self._fallback(kind, step, data)
        else:
            self._offline_since = None

    def _fallback(self, kind: str, step: int | None, data: Any) -> None:
        self._unsent += 1
        line = {"kind": kind, "step": step, "data": data, "time": round(time.time(), 3)}
        try:
            self.fallback_dir.mkdir(parents=True, exist_ok=True)
            with open(self.fallback_path, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")
        except OSError as exc:  # even the fallback must not stop training
            logger.debug("could not write %s: %s", self.fallback_path, exc)
