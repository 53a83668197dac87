"""Run an experiment's stages in order in one run directory, resumably.

Each stage gets its LightningCLI config (``stage_configs``) just before it runs, with its references to
earlier stages resolved (``references``). A rerun skips finished stages and resumes an unfinished one from
``last.ckpt`` (only its own: ``stage_identity``); a finished stage whose resolved config or fingerprinted
files changed (``fingerprints``), or that finished before a stage ahead of it was rerun, is an error rather
than a silent skip, while an unfinished one whose config changed starts over (the old attempt kept as
``<stage>.previous``). Every stage is checked before the first one runs (``preflight``); re-evaluation and
prediction are ``evaluate``'s, the command line ``pipeline_cli``'s. The config grammar is described in
docs/configs.md, what a run directory holds in docs/run_directories.md.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from gream_lit.experiment.allocator import apply_configured_threshold
from gream_lit.experiment.composition import PipelineError, read_yaml
from gream_lit.experiment.fingerprints import verify_fingerprints
from gream_lit.experiment.lightning_cli import GreamCLI
from gream_lit.experiment.preflight import check_ready_inputs
from gream_lit.experiment.relocation import adopt_moved_run
from gream_lit.experiment.run_directory import RunDir, finite_metrics, run_lock, write_records
from gream_lit.experiment.stage_configs import stage_config
from gream_lit.experiment.stage_identity import StageIdentity, stage_identity

log = logging.getLogger(__name__)


class StageCLI(GreamCLI):
    """GreamCLI that keeps the last validation metrics and takes extra callbacks (a sweep's pruner).

    A stage's saved config is the whole truth about its model: the checkpoint's hyperparameters are
    not parsed over it, so a run directory that was moved (``relocation``) resumes and tests with its
    own paths, not those the checkpoint was written with.
    """

    def _parse_ckpt_path(self) -> None:
        return

    def __init__(self, *args, extra_callbacks: Sequence[L.Callback] = (), **kwargs) -> None:
        self.extra_callbacks = list(extra_callbacks)
        self.val_metrics: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.extend(self.extra_callbacks)
        return trainer

    def after_fit(self) -> None:
        self.val_metrics = finite_metrics(self.trainer.callback_metrics)
        super().after_fit()


def run_lightning(
    command: str,
    config_path: Path,
    ckpt_path: str | None = None,
    callbacks: Sequence[L.Callback] = (),
    overrides: Sequence[str] = (),
    out_dir: Path | None = None,
) -> tuple[L.Trainer, dict[str, float]]:
    """One LightningCLI command on a saved config (``overrides``: extra command-line flags); returns the
    trainer and every finite metric it logged. After ``fit`` that is the last validation plus the test of
    the best checkpoint. Per-user results and resources go to ``out_dir`` (default: the config's folder).
    """
    args = [command, "--config", str(config_path), *overrides]
    if ckpt_path:
        args += ["--ckpt_path", ckpt_path]
    try:
        cli = StageCLI(
            args=args,
            save_config_kwargs={"overwrite": True},
            extra_callbacks=callbacks,
            per_user_dir=str(out_dir or config_path.parent),
        )
    except RuntimeError as err:
        if ckpt_path and ("size mismatch" in str(err) or "loading state_dict" in str(err)):
            first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
            raise PipelineError(f"{ckpt_path}: does not fit the model of {config_path} ({first})") from err
        raise
    return cli.trainer, {**cli.val_metrics, **finite_metrics(cli.trainer.callback_metrics)}


def _check_not_stale(exp: Mapping[str, Any], run: RunDir, stage: str, record: Mapping[str, Any]) -> None:
    """A finished stage may not be older than a stage before it: its inputs were rebuilt since."""
    order = list(exp["stages"])
    for earlier in order[: order.index(stage)]:
        other = run.done(earlier)
        if other is not None and other["finished"] > record["finished"]:
            raise PipelineError(
                f"stage {stage!r} finished before stage {earlier!r} was rerun, so it used stale inputs; "
                f"delete {run.stage_dir(stage)} to rerun it"
            )


def resume_checkpoint(ckpt_dir: Path) -> str | None:
    """``last.ckpt``, or, when it is unreadable (a kill while it was written, or a link whose target is
    gone), the newest readable checkpoint beside it; the broken file is kept as ``last.ckpt.broken``.

    Torch checkpoints are zip archives whose directory sits at the end, so a cut-short file fails
    ``zipfile.is_zipfile`` without being loaded.
    """
    last = ckpt_dir / "last.ckpt"
    if not last.is_file() and not last.is_symlink():
        return None
    if last.is_file() and zipfile.is_zipfile(last):
        return str(last)
    last.replace(last.with_name("last.ckpt.broken"))
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if zipfile.is_zipfile(p)), key=lambda p: p.stat().st_mtime)
    fallback = str(others[-1]) if others else None
    log.warning(
        "%s is unreadable (cut short?), kept as last.ckpt.broken; %s",
        last,
        f"resuming from {fallback}" if fallback else "no other checkpoint: the stage starts over",
    )
    return fallback


def run_stage(
    exp: Mapping[str, Any], run: RunDir, stage: str, callbacks: Sequence[L.Callback] = ()
) -> dict[str, float]:
    """Fit (and test) one stage unless it is finished; resume from ``last.ckpt`` when one exists."""
    config = stage_config(exp, run, stage)
    stage_dir = run.stage_dir(stage)
    config_path = stage_dir / "config.yaml"
    _refuse_changed_config(config_path, config, stage)
    record = run.done(stage)
    for earlier in list(exp["stages"])[: list(exp["stages"]).index(stage)]:
        if (earlier_record := run.done(earlier)) is not None:
            verify_fingerprints(run.root, earlier, earlier_record)
    if record is not None:
        _check_not_stale(exp, run, stage, record)
        verify_fingerprints(run.root, stage, record)
        log.info("stage %s: finished earlier, skipping (%s)", stage, stage_dir / "DONE")
        return run.metrics(stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    resume = resume_checkpoint(run.checkpoint_dir(stage))
    identity = stage_identity(stage_dir, resume)
    log.info("stage %s: %s", stage, f"resuming from {resume}" if resume else "starting")
    trainer, metrics = run_lightning("fit", config_path, resume, [*callbacks, StageIdentity(identity)])
    if trainer.is_global_zero:
        write_records(exp, run, stage, trainer, metrics, resume)
    trainer.strategy.barrier("pipeline_stage_done")  # other ranks resolve the next stage from DONE
    return metrics


def _refuse_changed_config(config_path: Path, config: Mapping[str, Any], stage: str) -> None:
    """A stage directory belongs to the config it was started with. An unfinished one (no ``DONE``: it
    failed or was stopped) is moved aside to ``<stage>.previous[N]``, so a corrected rerun starts the stage
    over without losing what the failed attempt wrote."""
    if not config_path.is_file() or read_yaml(config_path) == config:
        return
    stage_dir = config_path.parent
    if not (stage_dir / "DONE").is_file():
        names = (f"{stage_dir.name}.previous{n if n > 1 else ''}" for n in range(1, 10_000))
        aside = next(p for p in map(stage_dir.with_name, names) if not p.exists())
        stage_dir.rename(aside)
        log.warning(
            "stage %s: unfinished and its config changed: starting over, the old attempt is in %s", stage, aside
        )
        return
    raise PipelineError(
        f"stage {stage!r} in {stage_dir} finished with a different config; "
        f"delete {stage_dir} to rerun it, or use another --run_dir"
    )


def _check_saved_configs(exp: Mapping[str, Any], run: RunDir) -> None:
    """Refuse a rerun whose stage configs differ from the ones saved, before anything is written."""
    for stage in exp["stages"]:
        config_path = run.stage_dir(stage) / "config.yaml"
        if not config_path.is_file():
            continue
        try:
            config = stage_config(exp, run, stage)
        except PipelineError:  # references to stages not finished yet: checked when the stage starts
            continue
        _refuse_changed_config(config_path, config, stage)


def prepare_run(exp: dict[str, Any], run_dir: str | Path) -> RunDir:
    """Create the run directory and save the merged experiment (what ``report`` reads), once the
    saved stage configs are known to match."""
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    adopt_moved_run(run.root)
    _check_saved_configs(exp, run)
    (run.root / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    return run


def run_experiment(
    exp: dict[str, Any],
    run_dir: str | Path,
    only: str | None = None,
    callbacks: Mapping[str, Sequence[L.Callback]] | None = None,
) -> dict[str, dict[str, float]]:
    """Run every stage (or just ``only``) in order; returns each stage's metrics."""
    if only is not None and only not in exp["stages"]:
        raise PipelineError(f"--stage {only!r} is not in this experiment; stages: {list(exp['stages'])}")
    apply_configured_threshold(exp.get("mmap_threshold"))
    with run_lock(Path(run_dir)):
        run = prepare_run(exp, run_dir)
        results = {}
        for stage in exp["stages"]:
            if only is None or stage == only:
                check_ready_inputs(exp, run, stage)
                results[stage] = run_stage(exp, run, stage, (callbacks or {}).get(stage, ()))
    return results
