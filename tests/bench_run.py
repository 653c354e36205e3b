"""Run a bench module in a subprocess as its docs say, `python -m bench.<name>` from the repository
root, and the publisher on a results folder."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run_bench(name: str, *args, timeout: float = 600, status: int = 0) -> subprocess.CompletedProcess:
    """`python -m bench.<name> ARGS`; fails the test with the output when it exits with another status."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == status, proc.stdout + proc.stderr
    return proc


def publish(results: Path, docs: Path, *pages: str) -> None:
    """`python -m bench.publish` from the JSON in `results` into `docs`."""
    run_bench("publish", "--results", results, "--docs", docs, *pages, timeout=300)
