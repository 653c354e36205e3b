"""Heatmaps of the pairwise cosines of classifier rows (or class means), side by side per method."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .neural_collapse import centred, pairwise_cosines

_PANEL_INCHES = 4.5
_DPI = 120


def plot_cosine_heatmaps(
    panels: dict[str, Tensor],
    path: str | Path,
    title: str,
    class_order: str = "sorted by training count, head → tail",
) -> None:
    """Save one PNG with a heatmap of cos(v~_k, v~_k') per panel, for the centred rows v~ of each (K, D) tensor.

    All panels share the colour scale -1..1 (diverging, white at 0) and one colour bar, so methods
    compare at a glance: a simplex ETF is a uniform off-diagonal of -1/(K-1), minority collapse a
    red block in the tail corner. `class_order` describes the row order and labels both axes.
    """
    if not panels:
        raise ValueError("plot_cosine_heatmaps needs at least one panel")
    # A bare Figure on an Agg canvas draws without pyplot: no display, no global figure registry,
    # so nothing is left open once this function returns.
    figure = Figure(figsize=(_PANEL_INCHES * len(panels) + 1.0, _PANEL_INCHES + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, rows) in zip(axes, panels.items()):
        cosines = pairwise_cosines(centred(rows.detach().cpu().double())).numpy()
        image = ax.imshow(cosines, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(f"class ({class_order})")
        ax.set_ylabel(f"class ({class_order})")
        # Integer ticks, thinned automatically: every class at K=10, every 10th at K=100.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    figure.colorbar(image, ax=list(axes), label="cosine of centred rows", shrink=0.85)
    figure.suptitle(title)
    figure.savefig(path, dpi=_DPI)
