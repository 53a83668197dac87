"""Compare finished runs: ``python -m gream_lit report <run dirs> --out DIR [--baseline RUN[:STAGE]]``.

Runs are grouped by experiment name, so seeds of one experiment pool into mean ± sample std (the spread is
shown only where an experiment has several runs). ``report.md`` / ``report.csv``: one row per experiment,
stage (pipeline order) and metric with its runs and tested users; index stages' quality statistics
(collision rates, code usage, quantisation error) are a table of their own (``index.csv``, and a second
table in ``report.md``). Charts, each written only where it shows more than one value:

- ``curves_<stage>.png`` (data in ``curves.csv``): the stage's training loss and validation metrics from its
  TensorBoard files, against steps and against the time since its first logged value; lines of one point are
  left out, and a ± std band appears only over several seeds;
- ``comparison.png``: with several runs, the headline test metrics by stage, one bar per experiment;
- ``intervals.png`` (with ``intervals.md`` / ``intervals.csv``, for stages that wrote per-user test results):
  each metric with its 95% bootstrap interval over users and, with ``--baseline``, the paired difference to
  the baseline on the users both scored, with its interval and a paired t-test; the baseline is not
  compared with itself.

A TensorBoard hparams view (``tensorboard --logdir DIR/tensorboard``) holds each run's hyperparameters next to
its metrics. Described for users in docs/configs.md, "Reports".
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gream_lit import stats
from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.per_user import FILE_NAME, read_per_user

DEFAULT_METRICS = ("*/test/*",)
INTERVAL_METRICS = ("recall@10", "ndcg@10")
CURVE_METRICS = ("train/loss", "train/pg_loss", "val/ndcg@10", "val/recall@10", "val/reward")
COMPARISON_METRICS = ("test/recall@10", "test/ndcg@10")
# an index stage reports its collision rate: the quality report (k-means stages) or the RQ-VAE module
INDEX_MARKERS = ("test/collision_rate_after", "test/collision_rate")


@dataclass
class Run:
    """One run directory: its experiment name, flat hyperparameters and every stage's metrics."""

    path: Path
    experiment: str
    hparams: dict[str, Any]
    metrics: dict[str, float]
    stages: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # finished stages whose metrics.json is gone


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``a.b.c`` keys; lists become strings (TensorBoard takes scalars only)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if node is None or isinstance(node, (bool, int, float, str)):
        return {prefix: node}
    return {prefix: str(node)}


def class_hparams(spec: Any, prefix: str) -> dict[str, Any]:
    """``prefix`` -> class path and ``prefix.arg`` -> init arg, for both LightningCLI spellings
    (``model: pkg.Class`` and ``model: {class_path, init_args}``)."""
    if isinstance(spec, str):
        return {prefix: spec}
    if not isinstance(spec, Mapping):
        return {}
    return {prefix: spec.get("class_path"), **flatten(spec.get("init_args") or {}, prefix)}


def load_run(path: Path) -> Run:
    """Read ``experiment.yaml`` and each stage's ``config.yaml`` and ``metrics.json``."""
    exp = yaml.safe_load((path / "experiment.yaml").read_text())
    hparams: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    missing = []
    for stage in exp.get("stages") or {}:
        stage_dir = path / stage
        if (stage_dir / "config.yaml").is_file():
            cfg = yaml.safe_load((stage_dir / "config.yaml").read_text())
            hparams[f"{stage}.seed"] = cfg.get("seed_everything")
            for part in ("model", "data"):
                hparams.update(class_hparams(cfg.get(part), f"{stage}.{part}"))
        if (stage_dir / "metrics.json").is_file():
            metrics.update(json.loads((stage_dir / "metrics.json").read_text()))
        elif (stage_dir / "DONE").is_file():
            missing.append(stage)
    stages = tuple(exp.get("stages") or ())
    return Run(path, str(exp.get("name", path.name)), hparams, metrics, stages, tuple(missing))


def provenance_note(runs: Sequence[Run]) -> str:
    """Where the numbers come from, and which finished stages have none (their rows are absent)."""
    lines = [
        "Metrics are each stage's test at the end of its fit (`<stage>/metrics.json`, per-user "
        "`<stage>/test_per_user.jsonl`); re-tests (`test <run>`) write to `<stage>/eval_*/` and are not in "
        "this report."
    ]
    lines += [
        f"- {run.path}: stage {stage!r} finished but {run.path / stage / 'metrics.json'} is missing; "
        "its rows are absent"
        for run in runs
        for stage in run.missing
    ]
    return "\n".join(lines) + "\n"


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Run directories given directly, or the run directories one level below a given folder."""
    runs = []
    for p in map(Path, paths):
        if (p / "experiment.yaml").is_file():
            runs.append(load_run(p))
            continue
        children = sorted(c for c in p.iterdir() if (c / "experiment.yaml").is_file()) if p.is_dir() else []
        if not children:
            raise PipelineError(f"{p} is neither a run directory (no experiment.yaml) nor a folder of run directories")
        runs += [load_run(c) for c in children]
    return runs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of one value is 0."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def select_metrics(runs: Sequence[Run], patterns: Sequence[str]) -> list[str]:
    names = sorted({k for r in runs for k in r.metrics})
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def split_key(key: str) -> tuple[str, str]:
    """``align/test/ndcg@10`` -> (``align``, ``test/ndcg@10``); a key without a stage keeps it whole."""
    stage, sep, rest = key.partition("/")
    return (stage, rest) if sep else ("", key)


def stage_order(runs: Sequence[Run]) -> list[str]:
    """Stages in pipeline order (first-seen across runs)."""
    order: list[str] = []
    for run in runs:
        order += [s for s in run.stages if s not in order]
    return order


def tested_users(runs: Sequence[Run], stage: str) -> str:
    """Users in the stage's per-user test files (``n``, or ``low-high`` when seeds differ; ``-``: none)."""
    counts = sorted({len(r) for r in (per_user_ranks(run.path, stage) for run in runs) if r is not None})
    if not counts:
        return "-"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def aggregate(runs: Sequence[Run], metrics: Sequence[str]) -> pd.DataFrame:
    """Long format, one row per (experiment, stage, metric): experiments in first-seen order, stages in
    pipeline order; ``runs`` (seeds), ``users`` (per-user test files), ``mean``, ``std`` (sample, over
    seeds) and ``values`` (each seed's value, in run order)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    order = stage_order(runs)
    keys = sorted(metrics, key=lambda k: (order.index(split_key(k)[0]) if split_key(k)[0] in order else len(order), k))
    rows = []
    for name, members in groups.items():
        users = {stage: tested_users(members, stage) for stage in order}  # per-user files read once per stage
        for key in keys:
            values = [r.metrics[key] for r in members if key in r.metrics]
            if not values:
                continue
            stage, metric = split_key(key)
            mean, std = mean_std(values)
            rows.append(
                {
                    "experiment": name,
                    "stage": stage,
                    "metric": metric,
                    "runs": len(values),
                    "users": users.get(stage, "-"),
                    "mean": mean,
                    "std": std,
                    "values": " ".join(f"{v:.4g}" for v in values),
                }
            )
    return pd.DataFrame(rows, columns=["experiment", "stage", "metric", "runs", "users", "mean", "std", "values"])


def to_markdown(table: pd.DataFrame) -> str:
    """One line per (experiment, stage, metric): ``mean ± std (each seed)``, a single run its value alone."""
    lines = ["| experiment | stage | metric | runs | users | value |", "|---|---|---|---:|---:|---|"]
    for _, r in table.iterrows():
        value = stats.fmt(r["mean"])
        if r["runs"] > 1:
            value += f" ± {stats.fmt(r['std'])} ({r['values']})"
        lines.append(f"| {r['experiment']} | {r['stage']} | {r['metric']} | {r['runs']} | {r['users']} | {value} |")
    return "\n".join(lines) + "\n"


def is_index_stage(metrics: Mapping[str, float], stage: str) -> bool:
    """An index stage tests its codes (collision rate, code usage), not a ranking."""
    return any(f"{stage}/{marker}" in metrics for marker in INDEX_MARKERS)


def split_index_metrics(runs: Sequence[Run], metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """(ranking metrics, index statistics): an index stage's numbers describe codes, not rankings, so they
    get their own table."""
    index_keys = {k for k in metrics if any(is_index_stage(r.metrics, split_key(k)[0]) for r in runs)}
    return [k for k in metrics if k not in index_keys], [k for k in metrics if k in index_keys]


def index_table(runs: Sequence[Run], keys: Sequence[str]) -> pd.DataFrame:
    """One row per (run, index stage), one column per statistic (``collision_rate_after``, ...)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        for key in keys:
            if key in run.metrics:
                stage, metric = split_key(key)
                row = rows.setdefault((run.experiment, run.path.name, stage), {})
                row[metric.removeprefix("test/")] = run.metrics[key]
    return pd.DataFrame([{"experiment": e, "run": r, "stage": s, **values} for (e, r, s), values in rows.items()])


def index_markdown(table: pd.DataFrame) -> str:
    """The index table transposed: one line per statistic, one column per (run, stage)."""
    columns = [f"{r['experiment']}/{r['stage']} ({r['run']})" for _, r in table.iterrows()]
    stat_names = [c for c in table.columns if c not in ("experiment", "run", "stage")]
    lines = ["| statistic | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in stat_names:
        cells = ["-" if pd.isna(v) else f"{v:.4g}" for v in table[name]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


def log_hparams(runs: Sequence[Run], out: Path) -> None:
    """Each run's hyperparameters with its metrics, for TensorBoard's hparams tab."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for run in runs:
        logger = TensorBoardLogger(save_dir=str(out), name="tensorboard", version=f"{run.experiment}__{run.path.name}")
        logger.log_hyperparams({"experiment": run.experiment, **run.hparams}, metrics=run.metrics)
        logger.finalize("success")


def per_user_ranks(run_dir: Path, stage: str) -> dict[str, int] | None:
    """A stage's per-user target ranks (all ranks' files of a multi-process test merged), or None."""
    stage_dir = run_dir / stage
    files = (
        [stage_dir / FILE_NAME]
        if (stage_dir / FILE_NAME).is_file()
        else sorted(stage_dir.glob("test_per_user.rank*.jsonl"))
    )
    if not files:
        return None
    ranks: dict[str, int] = {}
    for f in files:
        ranks.update(read_per_user(f))
    return ranks


@dataclass
class Baseline:
    """The run and stage paired differences are taken against, with its per-user ranks."""

    label: str
    run_dir: Path
    stage: str
    ranks: dict[str, int]

    def is_row(self, run: Run, stage: str) -> bool:
        """Whether ``stage`` of ``run`` is the baseline itself (no difference with itself is reported)."""
        return stage == self.stage and run.path.resolve() == self.run_dir.resolve()


def parse_baseline(spec: str) -> Baseline:
    """``RUN`` or ``RUN:STAGE``; RUN alone must have one stage with per-user results."""
    path, _, stage = spec.partition(":")
    run_dir = Path(path)
    if not (run_dir / "experiment.yaml").is_file():
        raise PipelineError(f"--baseline {spec}: {run_dir} is not a run directory (no experiment.yaml)")
    found = {s: per_user_ranks(run_dir, s) for s in ([stage] if stage else load_run(run_dir).stages)}
    if stage and found[stage] is None:
        raise PipelineError(f"--baseline {spec}: {run_dir / stage / FILE_NAME} does not exist; test that stage first")
    found = {s: ranks for s, ranks in found.items() if ranks is not None}
    if len(found) != 1:
        raise PipelineError(
            f"--baseline {spec}: name one stage as RUN:STAGE; stages with per-user results: {list(found)}"
        )
    ((name, ranks),) = found.items()
    return Baseline(f"{run_dir.name}/{name}", run_dir, name, ranks)


def interval_rows(
    runs: Sequence[Run],
    metrics: Sequence[str] = INTERVAL_METRICS,
    baseline: Baseline | None = None,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """One row per (run, stage with per-user results, metric), in pipeline order; the baseline's own row
    has ``is_baseline`` set and no difference."""
    rows = []
    for run in runs:
        for stage in run.stages:
            ranks = per_user_ranks(run.path, stage)
            if ranks is None:
                continue
            users = sorted(ranks)
            values = np.array([ranks[u] for u in users])
            for metric in metrics:
                ci = stats.bootstrap_interval(stats.rank_metric(values, metric), n_boot=n_boot)
                row = {
                    "experiment": run.experiment,
                    "run": run.path.name,
                    "stage": stage,
                    "metric": metric,
                    "users": ci.n,
                    "mean": ci.mean,
                    "low": ci.low,
                    "high": ci.high,
                    "is_baseline": baseline is not None and baseline.is_row(run, stage),
                }
                if baseline is not None and not row["is_baseline"]:
                    shared, a, b = stats.align(ranks, baseline.ranks)
                    if len(shared) >= 2:
                        cmp = stats.paired_comparison(
                            stats.rank_metric(a, metric), stats.rank_metric(b, metric), n_boot=n_boot
                        )
                        row.update(
                            {
                                "baseline": baseline.label,
                                "paired_users": len(shared),
                                "diff": cmp.diff.mean,
                                "diff_low": cmp.diff.low,
                                "diff_high": cmp.diff.high,
                                "p_value": cmp.p_value,
                            }
                        )
                rows.append(row)
    return pd.DataFrame(rows)


def intervals_markdown(table: pd.DataFrame) -> str:
    """``mean [low, high]`` per metric and, with a baseline, ``diff [low, high] (p)``."""
    has_base = "diff" in table
    head = "| experiment | stage | users | metric | value [95% CI] |"
    head += " vs baseline: diff [95% CI] | p |" if has_base else ""
    lines = [head, "|---|---|---:|---|---|" + ("---|---:|" if has_base else "")]
    for _, r in table.iterrows():
        cells = [
            r["experiment"],
            r["stage"],
            str(r["users"]),
            r["metric"],
            f"{stats.fmt(r['mean'])} [{stats.fmt(r['low'])}, {stats.fmt(r['high'])}]",
        ]
        if has_base:
            if r["is_baseline"]:
                cells += ["(the baseline)", "-"]
            elif isinstance(r.get("baseline"), str):
                cells += [
                    f"{stats.fmt(r['diff'])} [{stats.fmt(r['diff_low'])}, {stats.fmt(r['diff_high'])}] "
                    f"on {int(r['paired_users'])}",
                    f"{r['p_value']:.2g}",
                ]
            else:
                cells += ["no shared users", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nBaseline: {table['baseline'].dropna().iloc[0]}.\n" if has_base and table["baseline"].notna().any() else ""
    )
    return "\n".join(lines) + "\n" + note


def interval_chart(table: pd.DataFrame) -> Chart | None:
    """Per metric: each (experiment, stage) with its 95% bootstrap interval over users and, with a
    baseline, each paired difference with its interval (the baseline itself left out)."""
    panels = []
    for metric, part in table.groupby("metric", sort=False):
        labels = [f"{e}/{s}" for e, s in zip(part["experiment"], part["stage"])]
        err = [[m - lo, hi - m] for m, lo, hi in zip(part["mean"], part["low"], part["high"])]
        series = [Series("95% bootstrap interval over users", labels, part["mean"].tolist(), err)]
        panels.append(Panel(metric, "", metric, series))
        if "diff" in part:
            paired = part[part["diff"].notna()]
            labels = [f"{e}/{s}" for e, s in zip(paired["experiment"], paired["stage"])]
            err = [[d - lo, hi - d] for d, lo, hi in zip(paired["diff"], paired["diff_low"], paired["diff_high"])]
            diff = Series("paired difference, 95% interval", labels, paired["diff"].tolist(), err)
            base = paired["baseline"].iloc[0] if len(paired) else ""
            panels.append(Panel(f"{metric} − {base}", "", "difference", [diff]))
    return make_chart("intervals.png", "bar", "test metrics with 95% intervals", panels)


@dataclass
class Report:
    """What ``write_report`` wrote: the metric table, the index table and every chart's data."""

    table: pd.DataFrame
    index: pd.DataFrame
    charts: list[Chart]


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    patterns: Sequence[str] = DEFAULT_METRICS,
    baseline: str | None = None,
) -> Report:
    """Everything ``report`` writes."""
    runs = find_runs(paths)
    metrics = select_metrics(runs, patterns)
    if not metrics:
        known = sorted({k for r in runs for k in r.metrics})
        raise PipelineError(f"no metric matches {list(patterns)}; the runs logged {known}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking, index_keys = split_index_metrics(runs, metrics)
    table = aggregate(runs, ranking)
    index = index_table(runs, index_keys)
    markdown = "## Metrics\n\n" + to_markdown(table)
    if not index.empty:
        markdown += "\n## Index statistics\n\n" + index_markdown(index)
        index.to_csv(out / "index.csv", index=False)
    (out / "report.md").write_text(markdown + "\n" + provenance_note(runs))
    table.to_csv(out / "report.csv", index=False)
    charts = [comparison_chart(table)] if len(runs) > 1 and not table.empty else []
    curves = learning_curves(runs)
    if not curves.empty:
        curves.to_csv(out / "curves.csv", index=False)
        charts += curve_charts(curves)
    log_hparams(runs, out)
    base = parse_baseline(baseline) if baseline else None
    intervals = interval_rows(runs, baseline=base)
    if not intervals.empty:
        (out / "intervals.md").write_text(intervals_markdown(intervals))
        intervals.to_csv(out / "intervals.csv", index=False)
        charts.append(interval_chart(intervals))
    charts = [c for c in charts if c is not None]
    for chart in charts:
        draw(chart, out)
    return Report(table, index, charts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gream_lit report", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="glob patterns (default: */test/*)")
    p.add_argument("--baseline", help="RUN or RUN:STAGE with per-user results: paired differences against it")
    args = p.parse_args(argv)
    write_report(args.runs, args.out, args.metrics, args.baseline)
    print((Path(args.out) / "report.md").read_text(), flush=True)
    if (Path(args.out) / "intervals.md").is_file():
        print((Path(args.out) / "intervals.md").read_text(), flush=True)
    return 0
