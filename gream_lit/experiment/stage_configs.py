"""A stage's LightningCLI config as its job gets it: the experiment's ``defaults`` merged under the stage, its
references resolved, checkpoints and logs pointed into the stage directory (grammar: docs/configs.md)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gream_lit.experiment.composition import deep_merge
from gream_lit.experiment.references import own_artifacts, resolve_refs
from gream_lit.experiment.run_directory import RunDir

PIPELINE_KEYS = ("artifacts", "hardware")
CHECKPOINT_CLASS = "lightning.pytorch.callbacks.ModelCheckpoint"
LOGGER_CLASS = "lightning.pytorch.loggers.TensorBoardLogger"
FILE_LOGGERS = ("TensorBoardLogger", "CSVLogger")
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


def stage_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A merged stage without the pipeline's own keys, its own ``${artifacts.KEY}`` spelt as paths."""
    return own_artifacts({k: v for k, v in raw.items() if k not in PIPELINE_KEYS}, raw.get("artifacts") or {})


def stage_config(exp: Mapping[str, Any], run: RunDir, stage: str) -> dict[str, Any]:
    """The LightningCLI config for one stage, references resolved, run-directory paths filled in."""
    config = resolve_refs(stage_body(merged_stage(exp, stage)), run, stage, list(exp["stages"]))
    config.setdefault("seed_everything", exp.get("seed_everything", 0))
    trainer = config.setdefault("trainer", {})
    stage_dir = run.stage_dir(stage)
    trainer["default_root_dir"] = str(stage_dir)
    _with_logging(trainer, stage_dir)
    _with_checkpointing(trainer, run.checkpoint_dir(stage), link_last=trains_full_model(config))
    return config


def import_class(path: str) -> Any:
    """The object a LightningCLI ``class_path`` names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def stage_class(config: Mapping[str, Any], part: str) -> type | None:
    """The class a stage's ``model`` or ``data`` names, or None where it names none."""
    spec = config.get(part)
    path = spec.get("class_path") if isinstance(spec, Mapping) else spec
    return import_class(path) if isinstance(path, str) and "." in path else None
