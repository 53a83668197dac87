"""Compare finished runs: ``python -m gream_lit report <run dirs> --out DIR [--baseline RUN[:STAGE]]``.

Runs are grouped by experiment name (so seeds of one experiment pool into mean ± sample std) and
written in long format, one row per experiment, stage (pipeline order) and metric with its number of
runs and tested users, as ``report.md`` and ``report.csv``; one grouped bar chart per metric (stages on
the x axis, a bar per experiment, std over seeds as error bars); validation learning curves from the
stages' TensorBoard files (``curves.csv``, ``curve_<stage>_<metric>.png``: mean over seeds ± std); and
a TensorBoard hparams view (``tensorboard --logdir DIR/tensorboard``) with each run's hyperparameters
next to its metrics.

Stages that wrote per-user test results (``test_per_user.jsonl``) also get ``intervals.md`` /
``intervals.csv``: each metric with its 95% bootstrap interval over users and the number of users,
and, with ``--baseline``, the paired difference to the baseline on the users both scored, with its
interval and a paired t-test; ``intervals_<metric>.png`` draws them with error bars.
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
from gream_lit.experiment.per_user import FILE_NAME, read_per_user
from gream_lit.experiment.pipeline import PipelineError

DEFAULT_METRICS = ("*/test/*",)
INTERVAL_METRICS = ("recall@10", "ndcg@10")
CURVE_METRICS = ("val/ndcg@10", "val/recall@10", "val/reward")


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(labels: Sequence[str], values: Sequence[float], err, title: str, ylabel: str, path: Path) -> Path:
    """One bar per label with error bars (``err``: symmetric values or a ``[2, n]`` low/high array)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 1.5), 3.5))
    ax.bar(list(labels), list(values), yerr=err, capsize=4, color="tab:blue")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def grouped_bar_chart(table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Stages on the x axis (pipeline order), one bar per experiment in each, error bars = std over seeds."""
    plt = _pyplot()
    part = table[table["metric"] == metric]
    stages = list(dict.fromkeys(part["stage"]))
    experiments = list(dict.fromkeys(part["experiment"]))
    width = 0.8 / len(experiments)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(stages) * max(1, len(experiments) / 2) + 2), 3.8))
    for k, exp in enumerate(experiments):
        rows = part[part["experiment"] == exp].set_index("stage")
        xs = [i + (k - (len(experiments) - 1) / 2) * width for i, st in enumerate(stages) if st in rows.index]
        present = [st for st in stages if st in rows.index]
        ax.bar(xs, rows.loc[present, "mean"], width, yerr=rows.loc[present, "std"], capsize=3, label=exp)
    ax.set_xticks(range(len(stages)), stages)
    ax.set_title(f"{metric} by stage (error bars: std over seeds)")
    ax.set_ylabel(metric.rsplit("/", 1)[-1])
    if len(experiments) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metrics(table: pd.DataFrame, out: Path) -> list[Path]:
    """One grouped bar chart per metric (``test/ndcg@10``, ...), every stage and experiment in it."""
    return [
        grouped_bar_chart(table, metric, out / f"{re.sub(r'[^A-Za-z0-9@._-]+', '_', metric)}.png")
        for metric in dict.fromkeys(table["metric"])
    ]


def learning_curves(runs: Sequence[Run], tags: Sequence[str] = CURVE_METRICS) -> pd.DataFrame:
    """Validation curves from the stages' TensorBoard files: (experiment, stage, metric, step) rows with
    the mean and std over seeds of the value logged at that step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for run in runs:
        for stage in run.stages:
            for events in sorted((run.path / stage).rglob("events.out.tfevents.*")):
                acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
                acc.Reload()
                for tag in acc.Tags()["scalars"]:
                    stage_of, metric = split_key(tag)
                    if stage_of == stage and metric in tags:
                        rows += [
                            {
                                "experiment": run.experiment,
                                "run": run.path.name,
                                "stage": stage,
                                "metric": metric,
                                "step": e.step,
                                "value": e.value,
                            }
                            for e in acc.Scalars(tag)
                        ]
    if not rows:
        return pd.DataFrame(columns=["experiment", "stage", "metric", "step", "mean", "std", "runs"])
    frame = pd.DataFrame(rows).groupby(["experiment", "stage", "metric", "step", "run"], sort=False).last()
    grouped = frame.groupby(["experiment", "stage", "metric", "step"], sort=False)["value"]
    curves = grouped.agg(["mean", "count"]).join(grouped.std(ddof=1).fillna(0.0).rename("std"))
    return curves.rename(columns={"count": "runs"}).reset_index()


def plot_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per (stage, metric): each experiment's mean curve over seeds with a ± std band."""
    plt = _pyplot()
    paths = []
    for (stage, metric), part in curves.groupby(["stage", "metric"], sort=False):
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for exp, line in part.groupby("experiment", sort=False):
            line = line.sort_values("step")
            ax.plot(line["step"], line["mean"], marker="o", label=f"{exp} ({int(line['runs'].max())} runs)")
            ax.fill_between(line["step"], line["mean"] - line["std"], line["mean"] + line["std"], alpha=0.2)
        ax.set_title(f"{stage}: {metric}")
        ax.set_xlabel("training step")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / f"curve_{stage}_{re.sub(r'[^A-Za-z0-9@._-]+', '_', metric)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


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


def parse_baseline(spec: str) -> tuple[str, dict[str, int]]:
    """``RUN`` or ``RUN:STAGE`` -> (label, per-user ranks); RUN alone must have one stage with results."""
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
    return f"{run_dir.name}/{name}", ranks


def interval_rows(
    runs: Sequence[Run],
    metrics: Sequence[str] = INTERVAL_METRICS,
    baseline: tuple[str, dict[str, int]] | None = None,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """One row per (run, stage with per-user results, metric), in pipeline order."""
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
                }
                if baseline is not None:
                    shared, a, b = stats.align(ranks, baseline[1])
                    if len(shared) >= 2:
                        cmp = stats.paired_comparison(
                            stats.rank_metric(a, metric), stats.rank_metric(b, metric), n_boot=n_boot
                        )
                        row.update(
                            {
                                "baseline": baseline[0],
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
            if isinstance(r.get("baseline"), str):
                cells += [
                    f"{stats.fmt(r['diff'])} [{stats.fmt(r['diff_low'])}, {stats.fmt(r['diff_high'])}] "
                    f"on {r['paired_users']}",
                    f"{r['p_value']:.2g}",
                ]
            else:
                cells += ["no shared users", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nBaseline: {table['baseline'].dropna().iloc[0]}.\n" if has_base and table["baseline"].notna().any() else ""
    )
    return "\n".join(lines) + "\n" + note


def plot_intervals(table: pd.DataFrame, out: Path) -> list[Path]:
    """One bar chart per metric: every (run, stage) with its interval as the error bar."""
    paths = []
    for metric, part in table.groupby("metric", sort=False):
        labels = [f"{e}/{s}" for e, s in zip(part["experiment"], part["stage"])]
        err = np.vstack([part["mean"] - part["low"], part["high"] - part["mean"]])
        title = f"{metric}, 95% bootstrap interval over users"
        paths.append(
            bar_chart(labels, part["mean"], err, title, metric, out / f"intervals_{metric.replace('@', '_at_')}.png")
        )
    return paths


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    patterns: Sequence[str] = DEFAULT_METRICS,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Everything ``report`` writes; returns the aggregated table."""
    runs = find_runs(paths)
    metrics = select_metrics(runs, patterns)
    if not metrics:
        known = sorted({k for r in runs for k in r.metrics})
        raise PipelineError(f"no metric matches {list(patterns)}; the runs logged {known}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(runs, metrics)
    (out / "report.md").write_text(to_markdown(table) + "\n" + provenance_note(runs))
    table.to_csv(out / "report.csv", index=False)
    plot_metrics(table, out)
    curves = learning_curves(runs)
    if not curves.empty:
        curves.to_csv(out / "curves.csv", index=False)
        plot_curves(curves, out)
    log_hparams(runs, out)
    base = parse_baseline(baseline) if baseline else None
    intervals = interval_rows(runs, baseline=base)
    if not intervals.empty:
        (out / "intervals.md").write_text(intervals_markdown(intervals))
        intervals.to_csv(out / "intervals.csv", index=False)
        plot_intervals(intervals, out)
    return table


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
