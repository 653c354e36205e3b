"""Run the `allnc` command line in a subprocess, as users do."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def allnc(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "allnc_dist.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"allnc {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
