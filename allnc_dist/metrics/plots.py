"""The geometry plots: heatmaps of the pairwise cosines of classifier rows and of class means (side by
side per method), and per-class accuracy against training count."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
import torch
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


CLASS_ORDER = "sorted by training count, head \u2192 tail"


class Geometry(Protocol):
    classifier: Tensor  # (K, D)
    class_means: Tensor  # (K, D)


def training_count_order(class_counts: Sequence[int]) -> Tensor:
    """Class indices from the most to the least frequent (ties keep their index order)."""
    return torch.argsort(torch.as_tensor(class_counts), descending=True, stable=True)


def plot_geometry(panels: dict[str, Geometry], class_counts: Sequence[int], out_dir: str | Path) -> list[Path]:
    """heatmap_classifier.png and heatmap_class_means.png in `out_dir`: one panel per entry of
    `panels` (a method's classifier and class means), classes sorted by training count."""
    order = training_count_order(class_counts)
    paths = []
    for kind, what in (("classifier", "classifier vectors"), ("class_means", "class means (training set)")):
        path = Path(out_dir) / f"heatmap_{kind}.png"
        title = f"Cosines of the centred {what}; a simplex ETF has {-1 / (len(class_counts) - 1):.2f} off the diagonal"
        plot_cosine_heatmaps({name: getattr(g, kind)[order] for name, g in panels.items()}, path, title=title,
                             class_order=CLASS_ORDER)
        paths.append(path)
    return paths


def plot_per_class_accuracy(accuracy: Tensor, class_counts: Sequence[int], path: str | Path, title: str) -> None:
    """Save one PNG: each class's accuracy on the evaluated split (bars) and training count (line, log scale on the right
    axis), classes sorted by training count, the Many / Medium / Few classes coloured apart."""
    from .evaluation import class_splits  # noqa: PLC0415

    order = training_count_order(class_counts).tolist()
    counts = [class_counts[k] for k in order]
    split_of = {k: name for name, classes in class_splits(class_counts).items() for k in classes}
    colours = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}
    figure = Figure(figsize=(max(6.0, min(16.0, 0.12 * len(order) + 4.0)), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    positions = range(len(order))
    ax.bar(positions, accuracy[order].double().nan_to_num(0.0).numpy(), width=0.85,
           color=[colours[split_of[k]] for k in order])
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    if len(order) <= 30:  # name every class when they fit; otherwise number the positions
        ax.set_xticks(list(positions), [str(k) for k in order])
        ax.set_xlabel(f"class index ({CLASS_ORDER})")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax.set_xlabel(f"class rank ({CLASS_ORDER})")
    counts_axis = ax.twinx()
    counts_axis.plot(list(positions), counts, color="black", marker=".", linewidth=1.2)
    counts_axis.set_yscale("log")
    counts_axis.set_ylabel("training images (log)")
    handles = [Patch(color=c, label=f"{name} classes") for name, c in colours.items() if name in split_of.values()]
    handles.append(Line2D([], [], color="black", marker=".", label="training images"))
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.set_title(title)
    figure.savefig(path, dpi=_DPI)
