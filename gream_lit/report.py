"""Compare finished runs: ``python -m gream_lit report <run dirs> --out DIR``.

Runs are grouped by experiment name (so seeds of one experiment pool into mean ± sample std) and
written as ``report.md``, ``report.csv``, one PNG bar plot per metric, and a TensorBoard hparams view
(``tensorboard --logdir DIR/tensorboard``) with each run's hyperparameters next to its metrics.
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

import pandas as pd
import yaml

from gream_lit.pipeline import PipelineError

DEFAULT_METRICS = ("*/test/*",)


@dataclass
class Run:
    """One run directory: its experiment name, flat hyperparameters and every stage's metrics."""

    path: Path
    experiment: str
    hparams: dict[str, Any]
    metrics: dict[str, float]


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
    return Run(path, str(exp.get("name", path.name)), hparams, metrics)


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
    """One row per experiment (first-seen order): ``runs`` and ``<metric>`` / ``<metric>_std`` columns."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"experiment": name, "runs": len(members)}
        for metric in metrics:
            values = [r.metrics[metric] for r in members if metric in r.metrics]
            row[metric], row[f"{metric}_std"] = mean_std(values) if values else (math.nan, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """``mean ± std`` cells (std only where an experiment has several runs)."""
    lines = ["| experiment | runs | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for _, row in table.iterrows():
        cells = []
        for m in metrics:
            mean, std = row[m], row[f"{m}_std"]
            cells.append("-" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}" if row["runs"] > 1 else f"{mean:.4f}")
        lines.append(f"| {row['experiment']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(table: pd.DataFrame, metrics: Sequence[str], out: Path) -> list[Path]:
    """One bar chart per metric, experiments side by side, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table) + 1.5), 3.5))
        ax.bar(table["experiment"], table[metric], yerr=table[f"{metric}_std"], capsize=4, color="tab:blue")
        ax.set_title(metric)
        ax.set_ylabel(metric.rsplit("/", 1)[-1])
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        path = out / f"{re.sub(r'[^A-Za-z0-9@._-]+', '_', metric)}.png"
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


def write_report(
    paths: Sequence[str | Path], out: str | Path, patterns: Sequence[str] = DEFAULT_METRICS
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
    return table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gream_lit report", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="glob patterns (default: */test/*)")
    args = p.parse_args(argv)
    write_report(args.runs, args.out, args.metrics)
    print((Path(args.out) / "report.md").read_text(), flush=True)
    return 0
