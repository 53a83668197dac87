"""Run an experiment's stages in order in one run directory, resumably.

An experiment file is YAML with a top-level ``stages:`` mapping; each stage is a LightningCLI config plus
``artifacts:`` and ``${...}`` references to earlier stages, resolved here just before the stage runs
(``resolve_refs``). The grammar (includes, merging, ``defaults:``, every reference and its ``|`` default,
dropping a stage) is described once, in docs/configs.md; composition is ``composition.py``'s job.

Layout: ``<runs_root>/<name>/experiment.yaml`` and per stage ``<stage>/config.yaml`` (resolved),
``checkpoints/last.ckpt``, ``metrics.json`` and a ``DONE`` record with the fingerprints of what the stage
read and wrote (``fingerprints``). A rerun skips finished stages and resumes an unfinished one from
``last.ckpt`` (only its own: ``stage_identity``); a finished stage whose resolved config or fingerprinted
files changed, or that finished before a stage ahead of it was rerun, is an error rather than a silent
skip, while an unfinished one whose config changed starts over (the old attempt kept as
``<stage>.previous``). Re-evaluations write to ``<stage>/eval_<mode>[_<N>users]/``. Every stage's whole
config is parsed as its LightningCLI job will parse it before the first stage runs (``preflight``).

The command line is ``pipeline_cli``.
"""

from __future__ import annotations

import difflib
import fcntl
import importlib
import inspect
import json
import logging
import math
import os
import re
import socket
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse._parameter_resolvers import get_signature_parameters  # the parameters LightningCLI accepts

from gream_lit.data.catalog import DataError
from gream_lit.experiment.allocator import apply_configured_threshold
from gream_lit.experiment.composition import (
    REF,
    PipelineError,
    check_run_settings,
    deep_merge,
    read_yaml,
    resolve_includes,
    resolve_static,
    set_dotted,
)
from gream_lit.experiment.fingerprints import stage_fingerprints, verify_fingerprints
from gream_lit.experiment.lightning_cli import GreamCLI
from gream_lit.experiment.preflight import check_stage_config
from gream_lit.experiment.relocation import adopt_moved_run
from gream_lit.experiment.stage_identity import StageIdentity, stage_identity
from gream_lit.inference.bundle import add_metrics
from gream_lit.inference.direct_eval import PredictionWriter

log = logging.getLogger(__name__)

PIPELINE_KEYS = ("artifacts",)
# sweep: read by `sweep`; mmap_threshold: glibc's, in bytes, for every stage (allocator.py)
EXPERIMENT_KEYS = ("name", "seed_everything", "backbone", "defaults", "stages", "sweep", "mmap_threshold")
# a stage is a LightningCLI config (GreamCLI adds test_after_fit) plus the pipeline's own keys
STAGE_KEYS = (
    "model",
    "data",
    "trainer",
    "seed_everything",
    "ckpt_path",
    "optimizer",
    "lr_scheduler",
    "test_after_fit",
    *PIPELINE_KEYS,
)
CHECKPOINT_CLASS = "lightning.pytorch.callbacks.ModelCheckpoint"
LOGGER_CLASS = "lightning.pytorch.loggers.TensorBoardLogger"
FILE_LOGGERS = ("TensorBoardLogger", "CSVLogger")


def load_experiment(
    path: str | Path, overrides: Mapping[str, Any] | None = None, seed: int | None = None
) -> dict[str, Any]:
    """The merged experiment: includes resolved, overrides applied, dropped stages removed.

    The name is the file's own ``name`` or its stem, never an included file's, so an ablation gets a
    run directory of its own.
    """
    path = Path(path).resolve()
    raw = read_yaml(path)
    exp = resolve_includes(raw, path.parent)
    if not isinstance(exp, dict) or not isinstance(exp.get("stages"), Mapping):
        raise PipelineError(f"{path}: an experiment needs a top-level 'stages' mapping")
    exp["name"] = raw.get("name", path.stem)
    for key, value in (overrides or {}).items():
        _check_override_stage(key, exp["stages"], path)
        set_dotted(exp, key, value)
    exp["stages"] = {k: v for k, v in exp["stages"].items() if v is not None}
    exp = resolve_static(exp, path)
    check_run_settings(exp, path)
    if not exp["stages"]:
        raise PipelineError(f"{path}: every stage was dropped")
    for name, stage in exp["stages"].items():
        if not isinstance(stage, Mapping) or "model" not in stage:
            keys = sorted(stage) if isinstance(stage, Mapping) else stage
            raise PipelineError(f"{path}: stage {name!r} needs a 'model' (got {keys!r})")
    check_experiment(exp, path)
    for name in exp["stages"]:
        check_stage_arguments(merged_stage(exp, name), f"{path}: stage {name!r}")
    for name in exp["stages"]:
        raw = merged_stage(exp, name)
        body = own_artifacts({k: v for k, v in raw.items() if k not in PIPELINE_KEYS}, raw.get("artifacts") or {})
        check_stage_config(body, f"{path}: stage {name!r}")
    if seed is not None:
        exp["seed_everything"] = seed
        for stage in exp["stages"].values():
            stage["seed_everything"] = seed
    return exp


def _check_override_stage(key: str, stages: Mapping[str, Any], path: Path) -> None:
    """``--set stages.NAME.…`` must name a stage of the experiment: a typo would add a stage of its own."""
    parts = key.split(".")
    if parts[0] != "stages" or len(parts) < 2 or parts[1] in stages:
        return
    match = difflib.get_close_matches(parts[1], list(stages), 1)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    raise PipelineError(f"--set {key}: {path} has no stage {parts[1]!r}{hint}; stages: {', '.join(stages)}")


def _unknown_keys(keys, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, allowed, 1)) else repr(k)
            for k in unknown
        ]
        raise PipelineError(f"{where}: unknown key {', '.join(hints)}; allowed: {', '.join(allowed)}")


def _references(node: Any) -> list[str]:
    if isinstance(node, Mapping):
        return [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return REF.findall(node) if isinstance(node, str) else []


def check_experiment(exp: Mapping[str, Any], path: Path) -> None:
    """Fail before any stage runs on what would otherwise pass silently or fail late: misspelt keys
    (``seed_everyting``, ``defualts``, ``--set stage.x=...``) and references to artifacts or stages
    that no earlier stage provides."""
    _unknown_keys(exp, EXPERIMENT_KEYS, str(path))
    order = list(exp["stages"])
    for name in order:
        stage = exp["stages"][name]
        _unknown_keys(stage, STAGE_KEYS, f"{path}: stage {name!r}")
        earlier = order[: order.index(name)]
        for ref in _references({k: v for k, v in stage.items() if k not in PIPELINE_KEYS}):
            expr, has_default, _ = ref.partition("|")
            parts = expr.strip().split(".")
            if parts[0] == "artifacts" and ".".join(parts[1:]) not in (stage.get("artifacts") or {}):
                raise PipelineError(
                    f"{path}: stage {name!r}: ${{{ref}}}: the stage declares no artifact {'.'.join(parts[1:])!r} "
                    f"(declared: {', '.join(stage.get('artifacts') or {}) or 'none'})"
                )
            if has_default or parts[0] not in ("prev", "stages"):
                continue
            if parts[0] == "stages":
                if len(parts) < 3 or parts[1] not in earlier:
                    raise PipelineError(
                        f"{path}: stage {name!r}: ${{{ref}}} must name an earlier stage ({', '.join(earlier) or 'none'})"
                    )
                sources, path_parts = [parts[1]], parts[2:]
            else:
                if not earlier:
                    raise PipelineError(f"{path}: stage {name!r}: ${{{ref}}} but no stage runs before it")
                sources, path_parts = earlier, parts[1:]
            if path_parts[:1] == ["artifacts"]:
                key = ".".join(path_parts[1:])
                if not any(key in (exp["stages"][s].get("artifacts") or {}) for s in sources):
                    raise PipelineError(
                        f"{path}: stage {name!r}: ${{{ref}}}: no earlier stage declares artifact {key!r} "
                        f"(add it under that stage's 'artifacts:' or give a default: ${{{expr.strip()}|value}})"
                    )


def check_stage_arguments(stage: Mapping[str, Any], where: str) -> None:
    """The stage's model and data classes exist and get every top-level argument they require and none they
    do not take, so a typo or a missing path in the last stage fails before the first stage runs.

    The parameters are those LightningCLI will accept: jsonargparse's resolver follows ``**kwargs`` into
    the parent classes (``AlignmentDataModule`` -> ``CatalogDataModule``)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    for part in ("model", "data"):
        spec = stage.get(part)
        try:
            cls = _stage_class(stage, part)
        except (ImportError, AttributeError, ValueError) as e:
            class_path = spec.get("class_path") if isinstance(spec, Mapping) else spec
            raise PipelineError(f"{where}: {part}: class_path {class_path!r} cannot be imported ({e})") from e
        if cls is None:
            continue
        if isinstance(spec, Mapping):
            _unknown_keys(spec, ["class_path", "init_args", "dict_kwargs"], f"{where}: {part}")
        given = spec.get("init_args") or {} if isinstance(spec, Mapping) else {}
        if not isinstance(given, Mapping):
            raise PipelineError(f"{where}: {part}.init_args: expected a mapping, got {given!r}")
        params = get_signature_parameters(cls)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            _unknown_keys(given, [p.name for p in params], f"{where}: {part} {cls.__name__}")
        missing = [
            p.name
            for p in params
            if p.default is inspect.Parameter.empty and p.kind not in variadic and p.name not in given
        ]
        if missing:
            raise PipelineError(f"{where}: {part} {cls.__name__} needs init_args {', '.join(map(repr, missing))}")


def check_ready_inputs(exp: Mapping[str, Any], run: RunDir, start: str) -> None:
    """Before ``start`` runs, every stage from it on whose data class has ``check_inputs`` checks the inputs
    that earlier stages have already written (an index whose IDs SRPO's compact prompts cannot use fails
    here, not after the stages in between)."""
    order = list(exp["stages"])
    declared = {name: exp["stages"][name].get("artifacts") or {} for name in order}
    for name in order[order.index(start) :]:
        raw = merged_stage(exp, name)
        cls = _stage_class(raw, "data")
        check = getattr(cls, "check_inputs", None)
        if check is None:
            continue
        data = raw.get("data")
        given = data.get("init_args") or {} if isinstance(data, Mapping) else {}
        try:
            init_args = resolve_refs(own_artifacts(given, raw.get("artifacts") or {}), run, name, order, declared)
        except NotReady:
            continue
        try:
            check(init_args)
        except DataError as e:
            raise PipelineError(f"stage {name!r} (data.init_args) would fail when it starts: {e}") from e


# ----------------------------------------------------------------------------- run directory


class RunDir:
    """Paths and records of one experiment run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def last_ckpt(self, stage: str) -> Path:
        return self.checkpoint_dir(stage) / "last.ckpt"

    def done(self, stage: str) -> dict[str, Any] | None:
        """The DONE record of a finished stage, else None."""
        marker = self.stage_dir(stage) / "DONE"
        if not marker.is_file():
            return None
        try:
            record = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise PipelineError(
                f"{marker}: not a DONE record ({err.msg}; the file is empty or cut short); delete it and rerun "
                f"fit to finish stage {stage!r} again from its last checkpoint"
            ) from err
        if not isinstance(record, dict) or "finished" not in record:
            raise PipelineError(f"{marker}: not a DONE record (no 'finished' time); delete it and rerun fit")
        return record

    def metrics(self, stage: str) -> dict[str, float]:
        path = self.stage_dir(stage) / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def experiment(self) -> dict[str, Any]:
        return read_yaml(self.root / "experiment.yaml")


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[key] = value
    return out


# ----------------------------------------------------------------------------- references


class NotReady(Exception):
    """A reference to what a stage that has not finished will write (raised only when peeking)."""


def _lookup(run: RunDir, stage: str, path: list[str], peek: Mapping[str, Any] | None = None) -> Any:
    """One item of a finished stage: dir, ckpt, last_ckpt, artifacts.KEY, metrics.KEY. With ``peek``
    (each stage's declared artifacts), an unfinished stage is skipped for an artifact it will not write
    and raises ``NotReady`` otherwise."""
    record = run.done(stage)
    if record is None and peek is not None:
        if path[0] == "artifacts" and ".".join(path[1:]) not in (peek.get(stage) or {}):
            raise KeyError(f"stage {stage!r} will not write {'.'.join(path)!r}")
        raise NotReady(stage)
    if record is None:
        raise PipelineError(f"stage {stage!r} has not finished in {run.root}; run it first (without --stage)")
    head, rest = path[0], ".".join(path[1:])
    if head in ("dir", "ckpt", "last_ckpt") and not rest:
        return record[head]
    if head == "artifacts" and rest in record["artifacts"]:
        artifact = record["artifacts"][rest]
        if not Path(artifact).exists():
            raise PipelineError(
                f"stage {stage!r} wrote artifact {rest!r} at {artifact}, which no longer exists; delete "
                f"{run.stage_dir(stage) / 'DONE'} and rerun fit to write it again"
            )
        return artifact
    if head == "metrics":
        metrics = run.metrics(stage)
        if rest in metrics:
            return metrics[rest]
    raise KeyError(f"stage {stage!r} has no {'.'.join(path)!r}")


def _resolve_ref(ref: str, run: RunDir, stage: str, order: Sequence[str], peek: Mapping[str, Any] | None = None) -> Any:
    expr, has_default, default = ref.partition("|")
    expr = expr.strip()
    if expr == "run_dir":
        return str(run.root)
    if expr == "stage_dir":
        return str(run.stage_dir(stage))
    if expr == "stage_name":
        return stage
    parts = expr.split(".")
    earlier = list(order[: order.index(stage)])
    if parts[0] == "stages" and len(parts) >= 3:
        candidates, path = [parts[1]], parts[2:]
        if parts[1] not in order:
            if not has_default:
                raise PipelineError(f"stage {stage!r}: ${{{ref}}} names stage {parts[1]!r}, absent here")
            return yaml.safe_load(default)
    elif parts[0] == "prev" and len(parts) >= 2:
        candidates, path = list(reversed(earlier)), parts[1:]
        if path[0] in ("dir", "ckpt", "last_ckpt"):
            candidates = candidates[:1]
    else:
        raise PipelineError(f"stage {stage!r}: cannot parse reference ${{{ref}}}")
    errors = []
    for cand in candidates:
        try:
            return _lookup(run, cand, path, peek)
        except KeyError as e:
            errors.append(str(e.args[0]))
    if has_default:
        return yaml.safe_load(default)
    raise PipelineError(f"stage {stage!r}: ${{{ref}}} unresolved ({'; '.join(errors) or 'no earlier stage'})")


_OWN_ARTIFACT = re.compile(r"\$\{\s*artifacts\.([^}|\s]+)\s*\}")


def own_artifacts(node: Any, artifacts: Mapping[str, str]) -> Any:
    """``${artifacts.KEY}`` as ``${stage_dir}/<the stage's declared path>`` (checked at load time)."""
    if isinstance(node, Mapping):
        return {k: own_artifacts(v, artifacts) for k, v in node.items()}
    if isinstance(node, list):
        return [own_artifacts(v, artifacts) for v in node]
    if not isinstance(node, str):
        return node
    return _OWN_ARTIFACT.sub(lambda m: "${stage_dir}/" + str(artifacts[m.group(1)]), node)


def resolve_refs(
    node: Any, run: RunDir, stage: str, order: Sequence[str], peek: Mapping[str, Any] | None = None
) -> Any:
    """Substitute ``${...}``; a string that is one whole reference takes the value's own type. ``peek``:
    see ``_lookup``."""
    if isinstance(node, Mapping):
        return {k: resolve_refs(v, run, stage, order, peek) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, run, stage, order, peek) for v in node]
    if not isinstance(node, str):
        return node
    whole = REF.fullmatch(node)
    if whole:
        return _resolve_ref(whole.group(1), run, stage, order, peek)
    return REF.sub(lambda m: str(_resolve_ref(m.group(1), run, stage, order, peek)), node)


# ----------------------------------------------------------------------------- stage configs


FULL_MODEL_MODULES = ("SFTModule", "SRPOModule")


def trains_full_model(config: Mapping[str, Any]) -> bool:
    """An LLM stage without LoRA: its checkpoints are whole models (and their optimizer state)."""
    model = config.get("model")
    if not isinstance(model, Mapping):
        return False
    return (
        str(model.get("class_path", "")).endswith(FULL_MODEL_MODULES)
        and (model.get("init_args") or {}).get("lora") is None
    )


def _with_checkpointing(trainer: dict[str, Any], ckpt_dir: Path, link_last: bool = False) -> None:
    """Make the first ModelCheckpoint (added if absent) write ``last.ckpt`` into ``ckpt_dir``.

    ``link_last`` (full fine-tuning): ``last.ckpt`` is a link to the newest checkpoint the callback
    kept, so the disk holds one copy of the model, not two. A resumed run then restarts from that
    checkpoint and redoes the epochs since, which ends where an uninterrupted run ends (the checkpoint
    holds the random streams) at the cost of that time."""
    if trainer.get("enable_checkpointing") is False:
        return
    callbacks = trainer.get("callbacks") or []
    callbacks = [callbacks] if isinstance(callbacks, Mapping) else list(callbacks)
    for cb in callbacks:
        if isinstance(cb, Mapping) and str(cb.get("class_path", "")).endswith("ModelCheckpoint"):
            args = cb.setdefault("init_args", {})
            break
    else:
        args = {}
        callbacks.append({"class_path": CHECKPOINT_CLASS, "init_args": args})
    args["dirpath"] = str(ckpt_dir)
    args["save_last"] = "link" if link_last else True
    trainer["callbacks"] = callbacks


def _with_logging(trainer: dict[str, Any], stage_dir: Path) -> None:
    """Keep logs in the stage directory: TensorBoard by default, file loggers' ``save_dir`` moved there.

    A fixed (empty) version makes a resumed stage keep writing to the same log folder.
    """
    logger = trainer.get("logger", True)
    if logger is True or logger is None:
        args = {"save_dir": str(stage_dir), "name": "tb", "version": ""}
        trainer["logger"] = {"class_path": LOGGER_CLASS, "init_args": args}
        return
    for entry in logger if isinstance(logger, list) else [logger]:
        if isinstance(entry, Mapping) and str(entry.get("class_path", "")).endswith(FILE_LOGGERS):
            args = entry.setdefault("init_args", {})
            args["save_dir"] = str(stage_dir)
            args.setdefault("version", "")


def merged_stage(exp: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """A stage's own keys over the experiment's ``defaults``, references as written."""
    return deep_merge(exp.get("defaults") or {}, exp["stages"][stage])


def stage_config(exp: Mapping[str, Any], run: RunDir, stage: str) -> dict[str, Any]:
    """The LightningCLI config for one stage, references resolved, run-directory paths filled in."""
    order = list(exp["stages"])
    raw = merged_stage(exp, stage)
    body = own_artifacts({k: v for k, v in raw.items() if k not in PIPELINE_KEYS}, raw.get("artifacts") or {})
    config = resolve_refs(body, run, stage, order)
    config.setdefault("seed_everything", exp.get("seed_everything", 0))
    trainer = config.setdefault("trainer", {})
    stage_dir = run.stage_dir(stage)
    trainer["default_root_dir"] = str(stage_dir)
    _with_logging(trainer, stage_dir)
    _with_checkpointing(trainer, run.checkpoint_dir(stage), link_last=trains_full_model(config))
    return config


# ----------------------------------------------------------------------------- running one stage


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
        self.val_metrics = _finite(self.trainer.callback_metrics)
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
    return cli.trainer, {**cli.val_metrics, **_finite(cli.trainer.callback_metrics)}


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
        _write_records(exp, run, stage, trainer, metrics, resume)
    trainer.strategy.barrier("pipeline_stage_done")  # other ranks resolve the next stage from DONE
    return metrics


def _write_records(
    exp: Mapping[str, Any], run: RunDir, stage: str, trainer: L.Trainer, metrics: dict[str, float], resume: str | None
) -> None:
    """``metrics.json`` and the ``DONE`` record that later stages' references and ``report`` read."""
    stage_dir = run.stage_dir(stage)
    artifacts = {}
    for key, rel in (exp["stages"][stage].get("artifacts") or {}).items():
        path = stage_dir / rel
        if not path.exists():
            raise PipelineError(f"stage {stage!r} declared artifact {key!r} at {path} but did not write it")
        artifacts[key] = str(path)
    ckpt_cb = trainer.checkpoint_callback
    last_path = ckpt_cb.last_model_path if ckpt_cb else ""
    record = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "dir": str(stage_dir),
        "ckpt": (ckpt_cb.best_model_path or last_path) if ckpt_cb else "",
        "last_ckpt": last_path,
        "resumed_from": resume,
        "monitor": ckpt_cb.monitor if ckpt_cb else None,
        "best_score": _finite({"s": ckpt_cb.best_model_score}).get("s") if ckpt_cb else None,
        "artifacts": artifacts,
    }
    for path in artifacts.values():
        add_metrics(path, metrics)  # the hand-off's model card carries the metrics it was tested with
    config = read_yaml(stage_dir / "config.yaml")
    record["fingerprints"] = stage_fingerprints(run.root, stage_dir, config, [record["ckpt"], *artifacts.values()])
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (stage_dir / "DONE").write_text(json.dumps(record, indent=2))


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


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<run>/.lock`` while this process runs stages in it.

    A second ``fit`` on the same run directory fails at once instead of training every stage twice.
    The lock is the kernel's (``flock``), so a killed process releases it and a rerun resumes. Only the
    launching process takes it: ranks that Lightning starts for DDP (``LOCAL_RANK``/``RANK`` set) share it.
    """
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PipelineError(
                f"{root} is in use by {holder}; wait for it to finish or use another --run_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


def import_class(path: str) -> Any:
    """The object a LightningCLI ``class_path`` names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _stage_class(config: Mapping[str, Any], part: str) -> type | None:
    spec = config.get(part)
    path = spec.get("class_path") if isinstance(spec, Mapping) else spec
    return import_class(path) if isinstance(path, str) and "." in path else None


def _cannot_rank(config: Mapping[str, Any], mode: str) -> str | None:
    """Why a stage cannot rank items in ``mode`` (``None``: it can)."""
    model_cls, data_cls = _stage_class(config, "model"), _stage_class(config, "data")
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
