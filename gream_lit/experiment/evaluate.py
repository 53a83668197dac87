"""Re-evaluate and predict with a finished run's stages: ``validate``/``test``/``predict`` on a run directory.

Each finished stage's best checkpoint runs on its saved config once its fingerprints match; results go
beside the stage's own, in ``<stage>/eval_<mode>[_<N>users]/`` and ``<stage>/predictions[_reasoning].jsonl``
(docs/run_directories.md).
"""

from __future__ import annotations

import inspect
import json
import logging
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.fingerprints import verify_fingerprints
from gream_lit.experiment.pipeline import run_lightning
from gream_lit.experiment.relocation import adopt_moved_run
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import stage_class
from gream_lit.inference.direct_eval import PredictionWriter

log = logging.getLogger(__name__)


def finished_stages(run: RunDir, only: str | None, command: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stage, DONE record) of every finished stage of a run directory, or of ``only``, once its
    fingerprints match; an unfinished stage is skipped with a warning, or an error when it was asked for
    by name."""
    adopt_moved_run(run.root)
    exp = run.experiment()
    if only is not None and only not in exp["stages"]:
        raise PipelineError(f"--stage {only!r} is not in this experiment; stages: {list(exp['stages'])}")
    for stage in exp["stages"]:
        if only is not None and stage != only:
            continue
        record = run.done(stage)
        if record is None:
            if only is not None:
                raise PipelineError(f"stage {stage!r} in {run.root} has not finished")
            log.warning("stage %s: not finished, skipping %s", stage, command)
            continue
        verify_fingerprints(run.root, stage, record)
        yield stage, record


RANKING_MODES = ("direct", "reasoning")


def _mode_overrides(mode: str, exclude_seen: bool = False) -> list[str]:
    """The command-line flags that make a stage's saved config evaluate in ``mode`` (and, with
    ``exclude_seen``, never rank an item the user already had)."""
    if mode not in RANKING_MODES:
        raise PipelineError(f"--mode {mode!r}; expected one of {RANKING_MODES}")
    overrides = ["--data.init_args.eval_mode", "reasoning"] if mode == "reasoning" else []
    return overrides + (["--data.init_args.exclude_seen", "true"] if exclude_seen else [])


def eval_dir(
    stage_dir: Path, mode: str = "direct", max_eval_users: int | None = None, exclude_seen: bool = False
) -> Path:
    """Where a re-evaluation of a finished stage writes: a subfolder, so the test the stage ran at the end of
    its fit (``metrics.json``, ``test_per_user.jsonl``) stays as it was."""
    cap = f"_{max_eval_users}users" if max_eval_users else ""
    return stage_dir / (f"eval_{mode}" + cap + ("_exclude_seen" if exclude_seen else ""))


def evaluate_run(
    command: str,
    run: RunDir,
    only: str | None = None,
    mode: str = "direct",
    max_eval_users: int | None = None,
    exclude_seen: bool = False,
) -> dict[str, dict[str, float]]:
    """``validate``/``test`` every finished stage's best checkpoint once its fingerprints match; metrics
    (``<command>_metrics.json``), per-user results and resources go to
    ``<stage>/eval_<mode>[_<N>users][_exclude_seen]/``, so the stage's own files stay as the run wrote them.

    ``mode="reasoning"`` (stages trained to reason), a ``max_eval_users`` cap or ``exclude_seen`` (the
    protocol that never ranks an item of the user's history) evaluates differently from the stage's own
    test, so only stages that rank items take part."""
    overrides = _mode_overrides(mode, exclude_seen)
    if max_eval_users is not None and max_eval_users < 1:
        raise PipelineError(f"--max_eval_users must be >= 1, got {max_eval_users}")
    if max_eval_users is not None:
        overrides += ["--data.init_args.max_eval_users", str(max_eval_users)]
    stages = ranking_stages(run, only, command, mode) if overrides else finished_stages(run, only, command)
    results = {}
    for stage, record in stages:
        out_dir = eval_dir(run.stage_dir(stage), mode, max_eval_users, exclude_seen)
        out_dir.mkdir(exist_ok=True)
        config_path = run.stage_dir(stage) / "config.yaml"
        ckpt = best_checkpoint(stage, record)
        _, metrics = run_lightning(command, config_path, ckpt, overrides=overrides, out_dir=out_dir)
        (out_dir / f"{command}_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        results[stage] = metrics
    return results


def best_checkpoint(stage: str, record: Mapping[str, Any]) -> str | None:
    """The stage's best checkpoint, refused by name when it is missing or cut short."""
    ckpt = record.get("ckpt") or None
    if ckpt and not (Path(ckpt).is_file() and zipfile.is_zipfile(ckpt)):
        raise PipelineError(
            f"{ckpt}: stage {stage!r}'s best checkpoint is missing or cut short (not a complete checkpoint archive)"
        )
    return ckpt


def _cannot_rank(config: Mapping[str, Any], mode: str) -> str | None:
    """Why a stage cannot rank items in ``mode`` (``None``: it can)."""
    model_cls, data_cls = stage_class(config, "model"), stage_class(config, "data")
    if model_cls is None or model_cls.predict_step is L.LightningModule.predict_step:
        return "its model ranks no items"
    if mode == "reasoning" and (data_cls is None or "eval_mode" not in inspect.signature(data_cls).parameters):
        return "it has no reasoning mode (a curriculum stage has)"
    return None


def ranking_stages(run: RunDir, only: str | None, command: str, mode: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The finished stages that can rank items in ``mode``; any other is skipped with a warning, or an error
    when it was asked for by name."""
    for stage, record in finished_stages(run, only, command):
        skip = _cannot_rank(yaml.safe_load((run.stage_dir(stage) / "config.yaml").read_text()), mode)
        if skip is None:
            yield stage, record
        elif only is not None:
            raise PipelineError(f"stage {stage!r} cannot {command} in {mode} mode: {skip}")
        else:
            log.warning("stage %s: skipping %s in %s mode, %s", stage, command, mode, skip)


def predict_run(
    run: RunDir, only: str | None = None, mode: str = "direct", exclude_seen: bool = False
) -> dict[str, Path]:
    """``predict`` with every finished stage's best checkpoint that can rank items: the stage's test users,
    ranked raw item ids per user (``reasoning`` mode: and the text each wrote; ``exclude_seen``: none of
    the user's history) in ``<stage>/predictions[_reasoning][_exclude_seen].jsonl``; returns those files
    by stage."""
    overrides = _mode_overrides(mode, exclude_seen)
    suffix = ("_reasoning" if mode == "reasoning" else "") + ("_exclude_seen" if exclude_seen else "")
    out = {}
    for stage, record in ranking_stages(run, only, "predict", mode):
        path = run.stage_dir(stage) / f"predictions{suffix}.jsonl"
        config_path = run.stage_dir(stage) / "config.yaml"
        run_lightning("predict", config_path, best_checkpoint(stage, record), [PredictionWriter(str(path))], overrides)
        out[stage] = path
    return out
