"""What every published page formats alike: paths as the docs show them, numbers, and tables."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[2]
PUBLISH = "python -m bench.publish"  # the command that writes every page


def shown(path: Path) -> Path:
    """A path as the docs show it: relative to the repository when inside it."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    """Rows of preformatted cells as a GitHub markdown table."""
    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)


def rounded(rows: list[dict], digits: int = 1) -> list[dict]:
    """Rows with their floats rounded to `digits`, for tabulate to show as numbers."""
    return [{k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def load_note(results: dict) -> str:
    """How busy the shared machine was during a bench, where the bench recorded it."""
    load = results.get("load_average_1m")
    if not load:
        return ""
    return (f" Load average (1 min) on the {results['cpus']} CPUs: {load['start']:.1f} at the start, "
            f"{load['end']:.1f} at the end.")
