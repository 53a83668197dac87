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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.report_charts import Chart, comparison_chart, curve_charts, draw, learning_curves
from gream_lit.experiment.report_intervals import interval_chart, interval_rows, intervals_markdown, parse_baseline
from gream_lit.experiment.report_runs import Run, find_runs
from gream_lit.experiment.report_tables import (
    aggregate,
    index_markdown,
    index_table,
    provenance_note,
    select_metrics,
    split_index_metrics,
    to_markdown,
)

DEFAULT_METRICS = ("*/test/*",)


def log_hparams(runs: Sequence[Run], out: Path) -> None:
    """Each run's hyperparameters with its metrics, for TensorBoard's hparams tab."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for run in runs:
        logger = TensorBoardLogger(save_dir=str(out), name="tensorboard", version=f"{run.experiment}__{run.path.name}")
        logger.log_hyperparams({"experiment": run.experiment, **run.hparams}, metrics=run.metrics)
        logger.finalize("success")


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
