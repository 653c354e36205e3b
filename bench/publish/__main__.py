"""Writes the pages of docs/ from the benches' JSON.

    python -m bench.publish                                  # every page, from bench/results/ into docs/
    python -m bench.publish --results DIR --docs DIR PERFORMANCE.md     # one page, elsewhere

RESULTS.md links the heatmaps in <docs>/figures/ (bench/ablations.py draws them there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from bench.publish.formatting import ROOT
from bench.publish.pages import class_mean_sync_page, loader_page
from bench.publish.performance import REGENERATE, performance_page
from bench.publish.results import results_page


def bench_json(results: Path, name: str) -> dict:
    """A bench's JSON that a page cannot go without."""
    path = results / name
    if not path.exists():
        raise SystemExit(f"{path} is absent: run `{REGENERATE[name]}` first")
    return json.loads(path.read_text())


# page -> how it is written from the results folder and the docs folder
PAGES: dict[str, Callable[[Path, Path], str]] = {
    "PERFORMANCE.md": lambda results, docs: performance_page(results),
    "RESULTS.md": lambda results, docs: results_page(results, docs / "figures", docs),
    "class_mean_sync.md": lambda results, docs: class_mean_sync_page(bench_json(results, "class_mean_sync.json")),
    "loader_benchmark.md": lambda results, docs: loader_page(bench_json(results, "loader.json")),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", metavar="PAGE", help=f"some of {', '.join(PAGES)} (default: all)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="the benches' JSON")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the pages go")
    args = parser.parse_args()
    unknown = [page for page in args.pages if page not in PAGES]
    if unknown:
        parser.error(f"unknown page {', '.join(unknown)}: the pages are {', '.join(PAGES)}")
    args.docs.mkdir(parents=True, exist_ok=True)
    for page in args.pages or PAGES:
        path = args.docs / page
        path.write_text(PAGES[page](args.results, args.docs))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
