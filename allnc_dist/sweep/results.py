"""A finished sweep's outcome: every trial ranked by the sweep's metric, as a markdown table, and the
final validation accuracies plotted against each swept parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from tabulate import tabulate

from .spec import FEW, OVERALL, SweepConfig

_PANEL_INCHES = 4.2
_DPI = 120


@dataclass(frozen=True)
class TrialOutcome:
    trial_id: str
    knobs: dict[str, Any]  # field path -> the trial's value
    last: dict[str, Any]  # the trial's last report (epoch, eval/...), {} when it never reported
    epochs: int  # epochs the trial was configured for
    errored: bool

    @property
    def epochs_run(self) -> int:
        return int(self.last.get("epoch", 0))

    @property
    def stopped_early(self) -> bool:
        return not self.errored and self.epochs_run < self.epochs

    def value(self, key: str) -> float:
        value = self.last.get(key)
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def status(self) -> str:
        return "error" if self.errored else "yes" if self.stopped_early else "no"


def trial_outcomes(results: Iterable, spec: SweepConfig, epochs: int) -> list[TrialOutcome]:
    """Tune's results as outcomes, best first by the sweep's metric (trials without it last)."""
    outcomes = []
    for result in results:
        knobs = {path: result.config.get(path) for path in spec.space}
        outcomes.append(TrialOutcome(Path(result.path).name, knobs, dict(result.metrics or {}),
                                     int(knobs.get("train.epochs", epochs)), result.error is not None))
    sign = -1.0 if spec.mode == "max" else 1.0
    return sorted(outcomes, key=lambda o: (math.isnan(o.value(spec.metric)), sign * o.value(spec.metric)))


def format_value(value: Any) -> str:
    return format(value, ".4g") if isinstance(value, float) else str(value)


def table(outcomes: list[TrialOutcome], spec: SweepConfig) -> str:
    metric_columns = [(OVERALL, "val acc (%)"), (FEW, "val Few (%)")]
    if spec.metric not in (OVERALL, FEW):
        metric_columns.append((spec.metric, f"val {spec.metric.removeprefix('eval/')}"))
    headers = ["trial", *spec.space, *(label for _, label in metric_columns), "epochs", "stopped early"]
    rows = [[o.trial_id, *(format_value(o.knobs[p]) for p in spec.space),
             *(format(o.value(key), ".2f") for key, _ in metric_columns), o.epochs_run, o.status]
            for o in outcomes]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def summary(outcomes: list[TrialOutcome], spec: SweepConfig) -> str:
    """The summary page: the setup, the best trial, then the table of every trial, best first."""
    scheduler = spec.scheduler.type.upper()
    lines = [f"# Sweep {spec.name}", "",
             f"{len(outcomes)} trials, {spec.search} search, {scheduler} scheduler; ranked by the validation "
             f"split's {spec.metric} ({spec.mode}). Accuracies are each trial's last evaluation; an early-stopped "
             "trial's is from its last epoch.", ""]
    best = best_trial(outcomes, spec)
    if best is not None:
        knobs = ", ".join(f"{p}={format_value(v)}" for p, v in best["knobs"].items())
        lines += [f"Best: trial {best['trial']}, {spec.metric} = {best['value']:.2f}: {knobs}", ""]
    return "\n".join([*lines, table(outcomes, spec), ""])


def best_trial(outcomes: list[TrialOutcome], spec: SweepConfig) -> dict[str, Any] | None:
    """The best trial that did not fail (outcomes come best first) as best.json records it: its id, the
    sweep's metric and value, its knobs and the same knobs as `section.field=value` overrides; None
    when no such trial reported the metric."""
    candidates = [o for o in outcomes if not o.errored and not math.isnan(o.value(spec.metric))]
    if not candidates:
        return None
    best = candidates[0]
    return {"trial": best.trial_id, "metric": spec.metric, "value": best.value(spec.metric), "knobs": best.knobs,
            "overrides": [f"{path}={value}" for path, value in best.knobs.items()]}


def plot_parameters(outcomes: list[TrialOutcome], spec: SweepConfig, path: Path) -> None:
    """One panel per swept parameter: each trial's final validation accuracy, overall and Few, against
    its value; a log axis for log-uniform knobs; hollow markers for trials stopped early."""
    columns = min(3, len(spec.space))
    rows = math.ceil(len(spec.space) / columns)
    figure = Figure(figsize=(_PANEL_INCHES * columns, _PANEL_INCHES * rows * 0.85 + 0.8), layout="constrained")
    FigureCanvasAgg(figure)  # a bare Agg figure: no pyplot, no display, nothing left open
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (knob, distribution) in zip(axes, spec.space.items()):
        xs, ticks = positions([o.knobs[knob] for o in outcomes], categorical=distribution.kind in ("choice", "grid"))
        for key, label, marker, colour in ((OVERALL, "overall", "o", "tab:blue"), (FEW, "Few", "^", "tab:orange")):
            for stopped in (False, True):
                chosen = [i for i, o in enumerate(outcomes) if o.stopped_early == stopped]
                ax.scatter([xs[i] for i in chosen], [outcomes[i].value(key) for i in chosen], marker=marker, s=42,
                           edgecolors=colour, facecolors="none" if stopped else colour,
                           label=f"{label}{' (stopped early)' if stopped else ''}" if chosen else None)
        if distribution.kind == "loguniform":
            ax.set_xscale("log")
            # Plain numbers at 1, 2 and 5 of each decade: a sweep's range often spans less than one.
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), [format_value(t) for t in ticks])
            ax.set_xlim(-0.5, len(ticks) - 0.5)
        ax.set_xlabel(knob)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(spec.space):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    figure.suptitle(f"Sweep {spec.name}: final validation accuracy of {len(outcomes)} trials against each parameter")
    figure.savefig(path, dpi=_DPI)


def positions(values: list[Any], categorical: bool) -> tuple[list[float], list[Any] | None]:
    """x positions of the values: the numbers themselves on a continuous axis, or, for a discrete knob
    (or any value not a number), evenly spaced distinct values (sorted when all are numbers) that
    label the ticks."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numbers and not categorical:
        return [float(v) for v in values], None
    distinct = list(dict.fromkeys(values))
    if numbers:
        distinct.sort()
    return [float(distinct.index(v)) for v in values], distinct
