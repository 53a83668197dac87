"""``report``'s per-user intervals: each metric's 95% bootstrap interval over users and, with a baseline,
the paired difference on the users both scored (``intervals.md`` / ``intervals.csv`` / ``intervals.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gream_lit import stats
from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.per_user import FILE_NAME
from gream_lit.experiment.report_charts import Chart, Panel, Series, make_chart
from gream_lit.experiment.report_runs import Run, load_run, per_user_ranks

INTERVAL_METRICS = ("recall@10", "ndcg@10")


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
