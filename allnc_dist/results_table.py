"""Methods side by side: the results table (accuracy overall and by Many / Medium / Few, and the
Neural-Collapse geometry) and the cosine heatmaps of their classifier vectors and class means."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tabulate import tabulate

from .metrics.plots import plot_geometry as plot_cosine_geometry

if TYPE_CHECKING:
    from .engine.trainer import TrainResult

# Columns of the results table: (header, metric key, format).
TABLE_COLUMNS = [
    ("overall %", "acc_top1", ".1f"),
    ("many %", "acc_many", ".1f"),
    ("medium %", "acc_medium", ".1f"),
    ("few %", "acc_few", ".1f"),
    ("NC1", "nc1", ".3f"),
    ("NC2 means", "nc2_means_maxangle", ".3f"),
    ("NC2 classifier", "nc2_classifier_maxangle", ".3f"),
    ("NC3", "nc3", ".3f"),
    ("NC3 centred", "nc3_centred", ".3f"),
    ("few cos W", "few_cos_classifier", ".3f"),
    ("few cos means", "few_cos_means", ".3f"),
]

TABLE_NOTE = (
    "NC2 = mean |cos + 1/(K-1)| (max-angle) of the centred vectors; NC3 centred = NC3 with the centred classifier "
    "and centred means of each branch, averaged over the branches (what P2P aligns); few cos = mean pairwise cosine of the Few "
    "classes (minority collapse: near 1 is collapsed, -1/(K-1) is ideal). Lower NC1/NC2/NC3 is closer to collapse."
)


DISPLAY_NAMES = {
    "allnc": "AllNC", "ce": "CE", "la": "LA", "ldam_drw": "LDAM-DRW", "bbn": "BBN", "etf_dr": "ETF+DR",
    "allnc_paper": "AllNC-paper",
    # The ablation job's variants (allnc_dist.ablation.VARIANTS): the paper form with one part switched off ...
    "allnc_no_hycon": "AllNC-paper \u2212 HyCon", "allnc_no_p2p": "AllNC-paper \u2212 P2P",
    "allnc_no_gbbn": "AllNC-paper \u2212 GBBN",
    # ... and with one of the study's options switched on.
    "allnc_aux_alpha": "AllNC-paper, aux by \u03b1", "allnc_sqrt_sampler": "AllNC-paper, \u221an sampler",
    "allnc_la_by_loss": "AllNC-paper, LA by loss", "allnc_light": "AllNC-paper light",
    "allnc_balanced_sampler": "AllNC-paper, balanced sampler", "allnc_ce_la_by_loss": "AllNC-paper, CE + LA by loss",
    "allnc_reweight": "AllNC-paper, re-weighted", "allnc_la_reweight": "AllNC-paper, LA + re-weighted",
    "allnc_la_alpha": "AllNC-paper, LA by loss + aux by \u03b1",
}


def display_name(preset: str) -> str:
    return DISPLAY_NAMES.get(preset, preset)


def results_table(reports: dict[str, dict], fmt: str = "github") -> str:
    cells = {name: [format(r["metrics"].get(key, float("nan")), f) for _, key, f in TABLE_COLUMNS]
             for name, r in reports.items()}
    return metrics_table(cells, fmt)


def metrics_table(cells: dict[str, list[str]], fmt: str = "github", label: str = "method") -> str:
    """One row per name (shown by its display name) of already formatted cells, one per TABLE_COLUMNS entry."""
    rows = [[display_name(name), *row] for name, row in cells.items()]
    # disable_numparse: tabulate would otherwise re-format numeric cells and drop their digits (10.0 -> 10).
    return tabulate(rows, headers=[label] + [h for h, _, _ in TABLE_COLUMNS], tablefmt=fmt, disable_numparse=True)


def write_comparison(results: dict[str, TrainResult], out_dir: str | Path) -> str:
    """results.md (the table and its note) and the two heatmaps in `out_dir`; returns the printout."""
    out_dir = Path(out_dir)
    first = next(iter(results.values()))
    plots = plot_geometry(results, first.report["class_counts"], out_dir)
    table = results_table({name: r.report for name, r in results.items()})
    (out_dir / "results.md").write_text(table + "\n\n" + TABLE_NOTE + "\n")
    return f"{table}\n{TABLE_NOTE}\nruns and plots: {out_dir} ({', '.join(p.name for p in plots)})"


def plot_geometry(results: dict[str, TrainResult], class_counts: Sequence[int], out_dir: str | Path) -> list[Path]:
    """Cosine heatmaps of the classifier vectors and of the class means, one panel per method,
    classes ordered by training count (head first)."""
    return plot_cosine_geometry({display_name(name): r.evaluation for name, r in results.items()}, class_counts, out_dir)
