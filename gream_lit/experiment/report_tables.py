"""``report``'s tables: metrics pooled over seeds (``report.md`` / ``report.csv``) and index statistics."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from gream_lit import stats
from gream_lit.experiment.report_runs import Run, per_user_ranks, split_key

# an index stage reports its collision rate: the quality report (k-means stages) or the RQ-VAE module
INDEX_MARKERS = ("test/collision_rate_after", "test/collision_rate")


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
