"""A copied or moved run directory becomes a run of its own.

Stage records hold absolute paths: each stage's ``config.yaml`` (checkpoint folder, log folder,
``${stage_dir}`` and ``${prev.artifacts...}`` values), its ``DONE`` record (best checkpoint,
artifacts) and the ``adapter_config.json`` of chained LoRA hand-offs (the previous stage's adapter
as base model). After ``cp -a runs/A runs/B`` they still point into ``runs/A``, so ``test runs/B``
would restore A's checkpoint and write A's logs. ``adopt_moved_run`` finds the root the records were
written under (from a stage's checkpoint or log folder) and rewrites every such path to the
directory's own root, before anything else reads them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


def rebase(node: Any, old: str, new: str) -> Any:
    """``node`` with every string equal to ``old`` or under ``old/`` moved to ``new``."""
    if isinstance(node, dict):
        return {k: rebase(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [rebase(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old + "/")):
        return new + node[len(old) :]
    return node


def recorded_root(config: dict[str, Any]) -> Path | None:
    """The run root a stage's saved config was written for: its checkpoint folder's grandparent or
    its file logger's folder's parent (``None`` when the config names neither)."""
    trainer = config.get("trainer") or {}
    callbacks = trainer.get("callbacks") or []
    for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
        if not isinstance(cb, dict):  # a bare class path: a callback without arguments names no folder
            continue
        args = cb.get("init_args") or {}
        if str(cb.get("class_path", "")).endswith("ModelCheckpoint") and args.get("dirpath"):
            return Path(args["dirpath"]).parents[1]
    loggers = trainer.get("logger")
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(entry, dict) and (entry.get("init_args") or {}).get("save_dir"):
            return Path(entry["init_args"]["save_dir"]).parent
    return None


def _stage_configs(root: Path) -> list[Path]:
    return sorted(root.glob("*/config.yaml"))


def moved_from(root: Path) -> Path | None:
    """The root this run directory's records point at, when that is not ``root`` itself."""
    for path in _stage_configs(root):
        config = yaml.safe_load(path.read_text()) or {}
        old = recorded_root(config)
        if old is not None and old != root:
            return old
    return None


def adopt_moved_run(root: Path) -> Path | None:
    """Rewrite the records of a copied or moved run directory to point at ``root``; returns the old root."""
    old = moved_from(root)
    if old is None:
        return None
    log.warning("run directory %s was copied or moved from %s: its records now point at %s", root, old, root)
    before, after = str(old), str(root)
    for path in _stage_configs(root):
        config = yaml.safe_load(path.read_text()) or {}
        path.write_text(yaml.safe_dump(rebase(config, before, after), sort_keys=False))
    for path in sorted(root.glob("*/DONE")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:  # RunDir.done reports it with the fix
            continue
        path.write_text(json.dumps(rebase(record, before, after), indent=2))
    for path in sorted(root.rglob("adapter_config.json")):
        path.write_text(json.dumps(rebase(json.loads(path.read_text()), before, after), indent=2))
    return old
