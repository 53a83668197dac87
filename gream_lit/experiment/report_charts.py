"""``report``'s charts: learning curves and runs compared, each kept only where it shows more than one value.

A ``Chart`` holds the data it draws, so the data behind every figure can be checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gream_lit.experiment.report_runs import Run, split_key

CURVE_METRICS = ("train/loss", "train/pg_loss", "val/ndcg@10", "val/recall@10", "val/reward")
COMPARISON_METRICS = ("test/recall@10", "test/ndcg@10")


@dataclass
class Series:
    """One line (x, y) or one set of bars (x = labels) of a panel; ``err`` is the error bar or band."""

    label: str
    x: list
    y: list[float]
    err: list | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]


@dataclass
class Chart:
    """What one PNG shows, kept so that the data behind every figure can be checked."""

    file: str
    kind: str  # "line" or "bar"
    title: str
    panels: list[Panel]


def informative(panel: Panel, kind: str) -> Panel | None:
    """The panel without what a chart cannot show: a line of one point, or a bar chart of one bar."""
    if kind == "line":
        series = [s for s in panel.series if len(s.x) >= 2]
        return Panel(panel.title, panel.xlabel, panel.ylabel, series) if series else None
    return panel if sum(len(s.x) for s in panel.series) >= 2 else None


def make_chart(file: str, kind: str, title: str, panels: Sequence[Panel]) -> Chart | None:
    """A chart of the informative panels, or None when none is left."""
    kept = [q for q in (informative(p, kind) for p in panels) if q is not None]
    return Chart(file, kind, title, kept) if kept else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(chart: Chart, out: Path) -> Path:
    """Render a chart: panels side by side, two per row; lines with ± bands, or grouped bars."""
    plt = _pyplot()
    cols = min(2, len(chart.panels))
    rows = math.ceil(len(chart.panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, chart.panels):
        if chart.kind == "line":
            for s in panel.series:
                ax.plot(s.x, s.y, marker="o", markersize=3, label=s.label)
                if s.err is not None:
                    low = [y - e for y, e in zip(s.y, s.err)]
                    high = [y + e for y, e in zip(s.y, s.err)]
                    ax.fill_between(s.x, low, high, alpha=0.2)
        else:
            labels = list(dict.fromkeys(x for s in panel.series for x in s.x))
            width = 0.8 / len(panel.series)
            for k, s in enumerate(panel.series):
                xs = [labels.index(x) + (k - (len(panel.series) - 1) / 2) * width for x in s.x]
                err = np.array(s.err).T if s.err and isinstance(s.err[0], list) else s.err
                ax.bar(xs, s.y, width, yerr=err, capsize=3, label=s.label)
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_xticks(range(len(labels)), labels)
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if len(panel.series) > 1:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(chart.panels) :]:
        ax.set_visible(False)
    fig.suptitle(chart.title)
    fig.tight_layout()
    path = out / chart.file
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def comparison_chart(table: pd.DataFrame, metrics: Sequence[str] = COMPARISON_METRICS) -> Chart | None:
    """Stages on the x axis, one bar per experiment, a panel per headline metric; error bars (std over
    seeds) only for experiments with several runs."""
    present = [m for m in metrics if m in set(table["metric"])] or list(dict.fromkeys(table["metric"]))[:2]
    panels = []
    for metric in present:
        part = table[table["metric"] == metric]
        series = []
        for exp, rows in part.groupby("experiment", sort=False):
            seeds = int(rows["runs"].max())
            series.append(
                Series(
                    f"{exp} (mean ± std over {seeds} seeds)" if seeds > 1 else exp,
                    list(rows["stage"]),
                    rows["mean"].tolist(),
                    rows["std"].tolist() if seeds > 1 else None,
                )
            )
        panels.append(Panel(metric, "stage", metric.rsplit("/", 1)[-1], series))
    return make_chart("comparison.png", "bar", "runs compared", panels)


def learning_curves(runs: Sequence[Run], tags: Sequence[str] = CURVE_METRICS) -> pd.DataFrame:
    """Training loss and validation curves from the stages' TensorBoard files: (experiment, stage, metric,
    step) rows with the mean and std over seeds of the value logged at that step, and ``time_s``, the mean
    seconds since the stage's first logged scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for run in runs:
        for stage in run.stages:
            stage_rows = []
            for events in sorted((run.path / stage).rglob("events.out.tfevents.*")):
                acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
                acc.Reload()
                for tag in acc.Tags()["scalars"]:
                    stage_of, metric = split_key(tag)
                    if stage_of == stage and metric in tags:
                        stage_rows += [
                            {
                                "experiment": run.experiment,
                                "run": run.path.name,
                                "stage": stage,
                                "metric": metric,
                                "step": e.step,
                                "wall": e.wall_time,
                                "value": e.value,
                            }
                            for e in acc.Scalars(tag)
                        ]
            start = min((r["wall"] for r in stage_rows), default=0.0)
            rows += [{**r, "time_s": r.pop("wall") - start} for r in stage_rows]
    columns = ["experiment", "stage", "metric", "step", "mean", "std", "runs", "time_s"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).groupby(["experiment", "stage", "metric", "step", "run"], sort=False).last()
    grouped = frame.groupby(["experiment", "stage", "metric", "step"], sort=False)
    curves = grouped["value"].agg(["mean", "count"]).join(grouped["value"].std(ddof=1).fillna(0.0).rename("std"))
    curves = curves.join(grouped["time_s"].mean())
    return curves.rename(columns={"count": "runs"}).reset_index()[columns]


def curve_charts(curves: pd.DataFrame) -> list[Chart]:
    """One chart per stage: each curve metric against steps and against minutes, a line per experiment
    (a ± std band where it has several seeds); lines of one point are left out."""
    charts = []
    for stage, part in curves.groupby("stage", sort=False):
        scale, unit = (60.0, "minutes") if part["time_s"].max() > 120 else (1.0, "seconds")
        panels = []
        by_metric = dict(tuple(part.groupby("metric", sort=False)))
        for metric in sorted(
            by_metric, key=lambda m: CURVE_METRICS.index(m) if m in CURVE_METRICS else len(CURVE_METRICS)
        ):
            lines = by_metric[metric]
            for axis, xlabel in (("step", "training step"), ("time_s", f"{unit} since the stage's first logged value")):
                series = []
                for exp, line in lines.groupby("experiment", sort=False):
                    line = line.sort_values("step")
                    seeds = int(line["runs"].max())
                    x = line[axis].tolist() if axis == "step" else (line[axis] / scale).tolist()
                    err = line["std"].tolist() if seeds > 1 else None
                    series.append(Series(f"{exp} ({seeds} seeds)" if seeds > 1 else exp, x, line["mean"].tolist(), err))
                panels.append(Panel(f"{metric} by {axis.removesuffix('_s')}", xlabel, metric, series))
        chart = make_chart(
            f"curves_{re.sub(r'[^A-Za-z0-9@._-]+', '_', stage)}.png", "line", f"{stage}: learning curves", panels
        )
        if chart is not None:
            charts.append(chart)
    return charts
