"""What every experiment file resolves to, in a form that survives rewriting the file: each stage's config
as its LightningCLI job gets it (references resolved against a run directory whose earlier stages are
recorded as finished), with every argument that equals the code's default dropped. Two files that give
the same snapshot run the same jobs, however they are composed."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from gream_lit.alignment.tasks.builders import parse_task_specs
from gream_lit.experiment.composition import compose_file, is_pipeline_file
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import stage_config

TRAINER_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(L.Trainer.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _defaults(class_path: str) -> dict[str, Any]:
    """Default init arguments of a class, including those its ``__init__`` passes on by ``**kwargs``
    to a base class (as jsonargparse reads them)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return {}
    out: dict[str, Any] = {}
    for klass in reversed(inspect.getmro(cls) if inspect.isclass(cls) else (cls,)):
        if not callable(klass) or klass is object:
            continue
        for n, p in inspect.signature(klass).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[n] = dataclasses.asdict(p.default) if dataclasses.is_dataclass(p.default) else p.default
    return out


def _equal(value: Any, default: Any) -> bool:
    try:
        return json.dumps(value, sort_keys=True, default=str) == json.dumps(default, sort_keys=True, default=str)
    except TypeError:
        return False


def without_defaults(
    node: Any, defaults: Mapping[str, Any] | None = None, dropped: list[tuple[str, Any]] | None = None, where: str = ""
) -> Any:
    """``node`` with every ``init_args`` entry (and every ``trainer`` argument) that equals the default of
    its class dropped, and of a mapping-valued default (a dataclass) every equal field; ``dropped`` collects
    the path and value of each."""

    def drop(path: str, value: Any) -> None:
        if dropped is not None:
            dropped.append((path, value))

    if isinstance(node, list):
        return [without_defaults(v, None, dropped, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    out = {}
    for key, value in node.items():
        path = f"{where}.{key}"
        if defaults is not None and key in defaults and _equal(value, defaults[key]):
            drop(path, value)
            continue
        if defaults is not None and isinstance(value, Mapping) and isinstance(defaults.get(key), Mapping):
            kept = {}
            for k, v in value.items():
                if _equal(v, defaults[key].get(k, object())):
                    drop(f"{path}.{k}", v)
                else:
                    kept[k] = v
            if not kept:
                continue
            value = kept
        if key in ("init_args", "trainer") and isinstance(value, Mapping):
            own = _defaults(str(node.get("class_path", ""))) if key == "init_args" else TRAINER_DEFAULTS
            value = without_defaults(value, own, dropped, path)
            if not value:
                continue
        else:
            value = without_defaults(value, None, dropped, path)
        out[key] = value
    return out


def _stage(config: Mapping[str, Any]) -> dict[str, Any]:
    config = dict(config)
    for part in ("model", "data"):
        if isinstance(config.get(part), str):
            config[part] = {"class_path": config[part]}
    snap = without_defaults(config)
    data = config.get("data") or {}
    if "tasks" in _defaults(str(data.get("class_path", ""))):  # the task table the data module builds
        tasks = parse_task_specs((data.get("init_args") or {}).get("tasks"))
        snap["data"].setdefault("init_args", {})["tasks"] = {name: vars(spec) for name, spec in tasks.items()}
    return snap


def finish_all(exp: dict, run: RunDir) -> None:
    """Record every stage as finished, with (empty) declared artefacts, so references resolve."""
    for name, stage in exp["stages"].items():
        folder = run.stage_dir(name)
        folder.mkdir(parents=True)
        artifacts = {k: str(folder / rel) for k, rel in (stage.get("artifacts") or {}).items()}
        for path in map(Path, artifacts.values()):  # later stages check that what they read exists
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True)
        record = {
            "finished": "2026-01-01T00:00:00",
            "dir": str(folder),
            "ckpt": str(folder / "best.ckpt"),
            "last_ckpt": str(folder / "last.ckpt"),
            "artifacts": artifacts,
        }
        (folder / "DONE").write_text(json.dumps(record))


def snapshot(path: Path, run_root: Path) -> dict[str, Any]:
    """The resolved, default-free form of one experiment file."""
    if is_pipeline_file(path):
        exp = load_experiment(path)
        run = RunDir(run_root)
        finish_all(exp, run)
        stages = {}
        for stage in exp["stages"]:
            text = json.dumps(_stage(stage_config(exp, run, stage)))
            stages[stage] = json.loads(text.replace(str(run.root), "<run>"))
        return {"name": exp["name"], "stages": stages}
    content = compose_file(path)
    return _stage(content) if "model" in content else content
