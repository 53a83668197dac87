"""Compare finished runs: ``python -m gream_lit report <run dirs> --out DIR [--baseline RUN[:STAGE]]``.

Runs are grouped by experiment name (so seeds of one experiment pool into mean ± sample std) and
written as ``report.md``, ``report.csv``, one PNG bar plot per metric, and a TensorBoard hparams view
(``tensorboard --logdir DIR/tensorboard``) with each run's hyperparameters next to its metrics.

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


@dataclass
class Run:
    """One run directory: its experiment name, flat hyperparameters and every stage's metrics."""

    path: Path
    experiment: str
    hparams: dict[str, Any]
    metrics: dict[str, float]
    stages: tuple[str, ...] = ()


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
    for stage in exp.get("stages") or {}:
        stage_dir = path / stage
        if (stage_dir / "config.yaml").is_file():
            cfg = yaml.safe_load((stage_dir / "config.yaml").read_text())
            hparams[f"{stage}.seed"] = cfg.get("seed_everything")
            for part in ("model", "data"):
                hparams.update(class_hparams(cfg.get(part), f"{stage}.{part}"))
        if (stage_dir / "metrics.json").is_file():
            metrics.update(json.loads((stage_dir / "metrics.json").read_text()))
    return Run(path, str(exp.get("name", path.name)), hparams, metrics, tuple(exp.get("stages") or ()))


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


def aggregate(runs: Sequence[Run], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per experiment (first-seen order): ``runs`` and ``<metric>`` / ``<metric>_std`` /
    ``<metric>_values`` (each seed's value, in run order) columns."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"experiment": name, "runs": len(members)}
        for metric in metrics:
            values = [r.metrics[metric] for r in members if metric in r.metrics]
            row[metric], row[f"{metric}_std"] = mean_std(values) if values else (math.nan, math.nan)
            row[f"{metric}_values"] = " ".join(f"{v:.4f}" for v in values)
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """``mean ± std (each seed)`` cells; a single run shows its value alone."""
    lines = ["| experiment | runs | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for _, row in table.iterrows():
        cells = []
        for m in metrics:
            mean, std = row[m], row[f"{m}_std"]
            seeds = f" ({row[f'{m}_values']})" if row["runs"] > 1 else ""
            cells.append(
                "-" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}{seeds}" if row["runs"] > 1 else f"{mean:.4f}"
            )
        lines.append(f"| {row['experiment']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(labels: Sequence[str], values: Sequence[float], err, title: str, ylabel: str, path: Path) -> Path:
    """One bar per label with error bars (``err``: symmetric values or a ``[2, n]`` low/high array)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 1.5), 3.5))
    ax.bar(list(labels), list(values), yerr=err, capsize=4, color="tab:blue")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metrics(table: pd.DataFrame, metrics: Sequence[str], out: Path) -> list[Path]:
    """One bar chart per metric, experiments side by side, error bars = std over seeds."""
    return [
        bar_chart(
            table["experiment"],
            table[m],
            table[f"{m}_std"],
            m,
            m.rsplit("/", 1)[-1],
            out / f"{re.sub(r'[^A-Za-z0-9@._-]+', '_', m)}.png",
        )
        for m in metrics
    ]


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
    (out / "report.md").write_text(to_markdown(table, metrics))
    table.to_csv(out / "report.csv", index=False)
    plot_metrics(table, metrics, out)
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
