"""What is checked before any stage runs: an experiment file loaded and checked whole.

Misspelt keys, references no earlier stage can satisfy and arguments the stages' classes do not take fail
at load time; each stage's whole config is then parsed by its LightningCLI job's own parser (jsonargparse),
which checks every nested key and type against the classes' signatures (``lora: {rr: 8}``, a misspelt
``rollout`` key, ``num_beams: 0`` where the type is ``PositiveInt``) and stops before anything is
instantiated, so no model or data is loaded. References to what earlier stages will write are still
``${...}`` strings then: a field that holds one is checked when its stage starts, as are the inputs earlier
stages have written (``check_ready_inputs``). The grammar being checked is described in docs/configs.md.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError
from jsonargparse._parameter_resolvers import get_signature_parameters  # the parameters LightningCLI accepts

from gream_lit.data.catalog import DataError
from gream_lit.experiment.composition import (
    REF,
    PipelineError,
    check_run_settings,
    deep_merge,
    include_path,
    read_yaml,
    resolve_includes,
    resolve_static,
    set_dotted,
)
from gream_lit.experiment.lightning_cli import GreamCLI
from gream_lit.experiment.references import NotReady, own_artifacts, resolve_refs
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import PIPELINE_KEYS, merged_stage, stage_body, stage_class

# sweep: read by `sweep`; mmap_threshold: glibc's, in bytes, for every stage (allocator.py);
# hardware: a configs/trainer/ file merged over every stage's trainer (`--trainer` replaces it);
# dataset: a configs/data/ file merged under every stage's data (`--set dataset=data/games.yaml`)
EXPERIMENT_KEYS = (
    "name",
    "seed_everything",
    "backbone",
    "defaults",
    "stages",
    "sweep",
    "mmap_threshold",
    "hardware",
    "dataset",
)
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


def load_experiment(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    hardware: str | None = None,
) -> dict[str, Any]:
    """The merged experiment: includes resolved, overrides applied, dropped stages removed, the hardware
    file (``hardware``, else the experiment's own ``hardware:``) merged over every stage's trainer.

    The name is the file's own ``name`` or its stem, never an included file's, so an ablation gets a
    run directory of its own.
    """
    path = Path(path).resolve()
    raw = read_yaml(path)
    exp = resolve_includes(raw, path.parent, (path,))
    if not isinstance(exp, dict) or not isinstance(exp.get("stages"), Mapping):
        raise PipelineError(f"{path}: an experiment needs a top-level 'stages' mapping")
    exp["name"] = raw.get("name", path.stem)
    for key, value in (overrides or {}).items():
        _check_override_stage(key, exp["stages"], path)
        set_dotted(exp, key, value)
    exp["stages"] = {k: v for k, v in exp["stages"].items() if v is not None}
    exp = resolve_static(exp, path)
    apply_dataset(exp, path)
    apply_hardware(exp, hardware, path)
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
        check_stage_config(stage_body(merged_stage(exp, name)), f"{path}: stage {name!r}")
    if seed is not None:
        exp["seed_everything"] = seed
        for stage in exp["stages"].values():
            stage["seed_everything"] = seed
    return exp


def apply_hardware(exp: dict[str, Any], override: str | None, path: Path) -> None:
    """Merge trainer files (a path, or one relative to ``configs/``: ``trainer/ddp.yaml``) into each
    stage's ``trainer``, so that hardware is written once, in ``configs/trainer/``. From weakest to
    strongest: ``defaults``, the experiment's ``hardware:``, the stage's own ``trainer`` keys, the stage's
    ``hardware:``; ``override`` (``--trainer``) replaces both files and wins over everything."""
    if override:
        exp["hardware"] = override
    shared = _trainer_file(exp["hardware"], path) if exp.get("hardware") else {}  # read once for every stage
    for stage in exp["stages"].values():
        trainer = stage.get("trainer") or {}
        if override:
            stage.pop("hardware", None)
            trainer = deep_merge(trainer, shared)
        else:
            trainer = deep_merge(shared, trainer)
            if stage.get("hardware"):
                trainer = deep_merge(trainer, _trainer_file(stage["hardware"], path))
        if trainer:
            stage["trainer"] = trainer


def apply_dataset(exp: dict[str, Any], path: Path) -> None:
    """Merge the experiment's ``dataset:`` file (a path, or one relative to ``configs/``: ``data/games.yaml``)
    under its ``defaults``, so every stage reads that dataset and a recipe moves to another one with one
    override. From weakest to strongest: the dataset file, ``defaults``, the stage's own keys."""
    if not exp.get("dataset"):
        return
    file = _config_file(exp["dataset"], path)
    piece = resolve_includes(read_yaml(file), file.parent, (file,))
    if not isinstance(piece, Mapping) or set(piece) != {"data"}:
        keys = sorted(piece) if isinstance(piece, Mapping) else piece
        raise PipelineError(
            f"{file}: a dataset file holds one 'data' mapping (configs/data/scientific.yaml), got {keys!r}"
        )
    exp["defaults"] = deep_merge(piece, exp.get("defaults") or {})


def _config_file(source: str, path: Path) -> Path:
    """A piece named by path, else relative to the experiment's folder or the nearest ``configs/`` above it."""
    return Path(source).resolve() if Path(source).is_file() else include_path(source, path.parent)


def _trainer_file(source: str, path: Path) -> dict[str, Any]:
    file = _config_file(source, path)
    trainer = read_yaml(file)
    if not isinstance(trainer, Mapping) or "trainer" in trainer:
        raise PipelineError(f"{file}: a hardware file is a mapping of Trainer arguments (configs/trainer/cpu.yaml)")
    return dict(trainer)


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
            cls = stage_class(stage, part)
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
        cls = stage_class(raw, "data")
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


_BOILERPLATE = re.compile(
    r"^(Does not validate against|Subtypes:|Errors:|Expected a <class 'NoneType'>|Given value|"
    r"Problem with given class_path|Parser key)"
)
_KEY = re.compile(r'Parser key "([^"]+)"')


class _Parsed(Exception):
    """Raised once the config parsed: nothing gets instantiated."""


class _ParseOnly(GreamCLI):
    """Stops right after parsing, before the seed is set or anything is built."""

    def _set_seed(self) -> None:
        raise _Parsed


def _with_defaults(node: Any) -> Any:
    """Whole-string references with a ``|default`` as their default (typed), others as written."""
    if isinstance(node, Mapping):
        return {k: _with_defaults(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_defaults(v) for v in node]
    if isinstance(node, str) and (whole := REF.fullmatch(node)) and "|" in whole.group(1):
        return yaml.safe_load(whole.group(1).partition("|")[2])
    return node


_UNKNOWN = re.compile(r"Subcommand '\w+' does not accept option '([^']+)'")


def summarize(error: str) -> str:
    """jsonargparse's nested union report as ``key.path: the first real complaint``."""
    error = _UNKNOWN.sub(r"\1: unknown key", error)
    keys: list[str] = []
    reason = ""
    for line in error.splitlines():
        text = line.strip().removeprefix("- ").strip()
        keys += [k for k in _KEY.findall(text) if not keys or keys[-1] != k]
        if text and not reason and not _BOILERPLATE.match(text):
            reason = text
    path = ".".join(k for k in keys if k not in ("init_args",))
    return f"{path}: {reason or error.splitlines()[0]}" if path else reason or error


def check_stage_config(config: Mapping[str, Any], where: str) -> None:
    """Parse ``config`` (a stage's LightningCLI config) with the stage job's parser; a mistake is a
    ``PipelineError`` naming ``where`` and the key."""
    try:
        _ParseOnly(args={"fit": _with_defaults(config)}, parser_kwargs={"exit_on_error": False}, run=True)
    except _Parsed:
        return
    except ArgumentError as err:
        text, found = str(err), _value_at(config, summarize(str(err)).partition(":")[0])
        if "${" in (str(found) if found is not _MISSING else text):  # an earlier stage provides it: checked then
            return
        raise PipelineError(f"{where}: {summarize(text)}") from err


_MISSING = object()


def _value_at(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at a ``summarize`` key path (``init_args`` levels left out), or ``_MISSING``."""
    if not dotted:
        return _MISSING
    node: Any = config
    for key in dotted.split("."):
        if isinstance(node, Mapping) and key not in node and isinstance(node.get("init_args"), Mapping):
            node = node["init_args"]
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node
