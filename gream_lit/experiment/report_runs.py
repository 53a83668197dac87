"""Read run directories for ``report``: each run's experiment name, hyperparameters, metrics and per-user ranks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.per_user import FILE_NAME, read_per_user


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


def split_key(key: str) -> tuple[str, str]:
    """``align/test/ndcg@10`` -> (``align``, ``test/ndcg@10``); a key without a stage keeps it whole."""
    stage, sep, rest = key.partition("/")
    return (stage, rest) if sep else ("", key)


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
