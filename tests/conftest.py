"""Test-wide settings: keep every tool's state out of $HOME and every listener on loopback."""

import os
import tempfile

_STATE = tempfile.mkdtemp(prefix="allnc-test-state-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_STATE, "matplotlib"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(_STATE, "torch_extensions"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
