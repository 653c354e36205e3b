"""Run the `allnc` command line in a subprocess, as users do."""

import os
import subprocess
import sys
from pathlib import Path

from allnc_dist.engine.faults import FAULT_ENV

ROOT = Path(__file__).parents[1]


def allnc(*args, check: bool = True, fault: str | None = None) -> subprocess.CompletedProcess:
    """`fault` sets the test-only fault-injection hook (allnc_dist/engine/faults.py)."""
    env = {**os.environ, FAULT_ENV: fault} if fault else None
    proc = subprocess.run([sys.executable, "-m", "allnc_dist.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"allnc {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def only_error_line(proc: subprocess.CompletedProcess, status: int, prog: str = "allnc") -> str:
    """The one line a failed command wrote to stderr (allnc_dist/errors.py), after checking its exit
    status and that no traceback came with it."""
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), proc.stderr
    return lines[0]
