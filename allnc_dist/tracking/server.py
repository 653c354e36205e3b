"""A private `mlflow server` on loopback over a SQLite store: what a sweep starts so that concurrent
trials never write one SQLite file from several processes, and what the tests run against."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` bound to 127.0.0.1 on a free port, its store `db` (SQLite) and its artifacts in
    `artifacts`; logs go to `<root>/server.log`. Use as a context manager, or call `stop()`."""

    def __init__(self, root: str | Path, db: str | Path | None = None, artifacts: str | Path | None = None,
                 startup_timeout_s: float = 120.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = Path(db or self.root / "mlflow.db").resolve()
        self.artifacts = Path(artifacts or self.db.parent / "mlartifacts").resolve()
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = self.root / "server.log"
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow = Path(sys.executable).parent / "mlflow"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--host", LOOPBACK, "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination", str(self.artifacts),
                 "--workers", "1"],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_healthy(startup_timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited (log {self.log_path}): {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not answer /health within {timeout_s:.0f} s (log {self.log_path})")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the server and its gunicorn/uvicorn children (it leads its own process group)."""
        if self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def get(self, endpoint: str, **query) -> dict:
        """GET /api/2.0/mlflow/<endpoint>?query, decoded."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
