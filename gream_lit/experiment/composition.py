"""Config files composed with OmegaConf: ``include:`` pieces, merging, load-time interpolation.

An experiment file (``pipeline``) and a single-stage LightningCLI config compose the same way: ``include:``
pieces merged under a mapping's own keys (relative to the file, else to the nearest ``configs/``), OmegaConf's
merge, and ``${...}`` interpolations resolved at load time, except a pipeline stage's references to its run
directory and itself (``${prev.…}``, ``${stages.…}``, ``${artifacts.…}``, ``${stage_dir}``, ``${run_dir}``,
``${stage_name}``), which pass through as written for ``references.resolve_refs``; a single-stage config that
holds one is an error naming the file and the key. The grammar is described once, in docs/configs.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

REF = re.compile(r"\$\{([^}]*)\}")
# a pipeline stage's references to its run directory and itself, resolved when the stage starts (the rest
# resolve at load time)
_RUN_TIME_REF = re.compile(r"(?<!\\)\$\{(?=\s*(?:prev|stages|artifacts)\.|\s*(?:run_dir|stage_dir|stage_name)\s*[}|])")
_ANY_REF = re.compile(r"\$\{")
CONFIGS_DIR = "configs"


class PipelineError(ValueError):
    """A malformed experiment file, a broken reference or an inconsistent run directory."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base`` (OmegaConf's merge): mappings merge recursively, anything else
    replaces; interpolations stay as written."""
    try:
        merged = OmegaConf.merge(OmegaConf.create(_escape(base)), OmegaConf.create(_escape(override)))
    except OmegaConfBaseException as err:
        raise PipelineError(f"cannot merge configs: {err}") from err
    return OmegaConf.to_container(merged, resolve=True)  # only unescapes: every ${ was escaped


def _escape(node: Any, pattern: re.Pattern = _ANY_REF) -> Any:
    """Every ``${`` that ``pattern`` finds as ``\\${``: OmegaConf keeps it as text through a merge or a
    resolve (and checks no grammar in it), then gives it back unescaped."""
    if isinstance(node, Mapping):
        return {k: _escape(v, pattern) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape(v, pattern) for v in node]
    return pattern.sub(r"\\${", node) if isinstance(node, str) else node


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise PipelineError(f"config file {path} does not exist")
    try:
        with path.open() as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        raise PipelineError(f"{path}: the file is empty (or only comments); a config is a YAML mapping")
    return data


def include_path(inc: str, base_dir: Path) -> Path:
    """``inc`` relative to the including file's folder, else to the nearest ``configs/`` folder above it."""
    path = (base_dir / inc).resolve()
    if path.is_file():
        return path
    for folder in (base_dir, *base_dir.parents):
        candidate = folder / CONFIGS_DIR / inc
        if candidate.is_file():
            return candidate.resolve()
    raise PipelineError(f"include {inc!r} (in {base_dir}): no such file there nor in a {CONFIGS_DIR}/ folder above it")


def include_allowed(where: tuple[str, ...]) -> bool:
    """Whether a node at key path ``where`` of a file may hold ``include:``: the file's top level, its
    ``defaults`` or one of its ``stages``, so that reading a stage means reading the files it names."""
    return where in ((), ("defaults",)) or (len(where) == 2 and where[0] == "stages")


def resolve_includes(node: Any, base_dir: Path, chain: tuple[Path, ...] = (), where: tuple[str, ...] = ()) -> Any:
    """Replace every ``include:`` by the included files' contents merged under the node's own keys."""
    if isinstance(node, list):
        return [resolve_includes(v, base_dir, chain, (*where, "[]")) for v in node]
    if not isinstance(node, Mapping):
        return node
    node = dict(node)
    includes = node.pop("include", None)
    if includes is not None and not include_allowed(where):
        file = chain[-1] if chain else base_dir
        raise PipelineError(
            f"{file}: include at {'.'.join(where)}: a file includes at its top level, under defaults or under a "
            "stage (stages.<name>); the pieces in configs/ hold their full path (data: {init_args: ...}), "
            "so include the piece there: docs/configs.md"
        )
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes or []:
        path = include_path(inc, base_dir)
        if path in chain:
            raise PipelineError(f"include cycle: {' -> '.join(map(str, (*chain, path)))}")
        content = read_yaml(path)
        if not isinstance(content, Mapping):
            raise PipelineError(f"{path}: an included file must hold a mapping, got {type(content).__name__}")
        merged = deep_merge(merged, resolve_includes(content, path.parent, (*chain, path)))
    own = {k: resolve_includes(v, base_dir, chain, (*where, k)) for k, v in node.items()}
    return deep_merge(merged, own) if includes else own


def resolve_static(config: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
    """Resolve the load-time ``${...}`` interpolations with OmegaConf (top-level keys, ``oc.env``...);
    the run-time references (``${prev.…}``, ``${stages.…}``, ``${artifacts.…}``, ``${stage_dir}``,
    ``${run_dir}``, ``${stage_name}``) pass through as written, with any load-time part inside them resolved
    (``${prev.artifacts.model|${backbone}}``)."""
    try:
        return OmegaConf.to_container(OmegaConf.create(_escape(config, _RUN_TIME_REF)), resolve=True)
    except InterpolationKeyError as err:
        missing = re.search(r"key '([^']+)'", err.msg)
        name = missing.group(1) if missing else "?"
        raise PipelineError(
            f"{where}: {err.full_key} says ${{{name}}}, but the file sets no top-level {name!r}"
        ) from err
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise PipelineError(f"{where}: {'at ' + key + ': ' if key else ''}{message}") from err


# top-level keys of a single-stage config that our CLI applies itself (an experiment file may set them too)
RUN_SETTINGS = ("mmap_threshold",)


def check_run_settings(config: Mapping[str, Any], where: str | Path) -> None:
    """Fail at load time, naming the file, on a run setting that is not a byte count (``null`` = unset)."""
    for key in RUN_SETTINGS:
        value = config.get(key)
        if value is not None and type(value) is not int:
            raise PipelineError(f"{where}: {key}: expected a byte count, got {value!r}")


def check_no_stage_references(config: Any, where: str | Path, key: str = "") -> None:
    """Fail, naming the file and the key, on a pipeline stage's reference (``${stage_dir}``,
    ``${prev.…}``…) in a single-stage config, which has no run directory or stage to resolve it against
    (LightningCLI would take it as literal text: a folder named ``${stage_dir}``)."""
    if isinstance(config, Mapping):
        for k, v in config.items():
            check_no_stage_references(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            check_no_stage_references(v, where, f"{key}[{i}]")
    elif isinstance(config, str) and (ref := _RUN_TIME_REF.search(config)):
        written = REF.match(config, ref.start())
        text = written.group(0) if written else repr(config)
        raise PipelineError(
            f"{where}: {key}: {text} is a pipeline stage's reference; a single-stage config has no run "
            "directory or stage (use it as a stage of an experiment file)"
        )


def compose_file(path: str | Path, single_stage: bool = False) -> Any:
    """A config file with its includes merged in and its load-time interpolations resolved (any file:
    an experiment or a single-stage LightningCLI config; ``single_stage``: fail on a stage's reference)."""
    path = Path(path).resolve()
    content = resolve_includes(read_yaml(path), path.parent, (path,))
    if not isinstance(content, Mapping):
        return content
    if single_stage:
        check_no_stage_references(content, path)
    return resolve_static(content, path)


def needs_composing(path: str | Path) -> bool:
    """True for a YAML file that uses ``include:``, ``${...}`` or a top-level run setting, which
    LightningCLI alone would not read."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    text = path.read_text()
    if re.search(rf"^({'|'.join(RUN_SETTINGS)})\s*:", text, re.MULTILINE):
        return True
    return "${" in text or re.search(r"^\s*include\s*:|[{,]\s*include\s*:", text, re.MULTILINE) is not None


def is_pipeline_file(path: str | Path) -> bool:
    """True for a YAML mapping with a top-level ``stages`` key (possibly through a top-level include)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    content = read_yaml(path)
    return isinstance(content, Mapping) and "stages" in resolve_includes(
        content, path.parent.resolve(), (path.resolve(),)
    )


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating mappings on the way (how sweeps and ``--set`` override)."""
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise PipelineError(f"cannot set {dotted!r}: {key!r} holds {child!r}, not a mapping")
        node = child
    node[keys[-1]] = value


CONFIG_FLAGS = ("--config", "-c")


def composed_config_args(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """LightningCLI arguments with each ``--config FILE`` that uses ``include:``, ``${...}`` or a run
    setting (``RUN_SETTINGS``) replaced by the composed config (jsonargparse reads a YAML string where
    it expects a file); others unchanged. Run settings are taken out, since LightningCLI knows no such
    key, and returned for the caller to apply (the last file that sets one wins)."""
    out, settings, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        flag, sep, value = arg.partition("=")
        if flag in CONFIG_FLAGS and not sep and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        elif not (flag in CONFIG_FLAGS and sep):
            out.append(arg)
            i += 1
            continue
        content = compose_file(value, single_stage=True) if needs_composing(value) else None
        if isinstance(content, Mapping):
            check_run_settings(content, value)
            settings.update({key: content.pop(key) for key in RUN_SETTINGS if key in content})
        out += [flag, value if content is None else yaml.safe_dump(content, sort_keys=False)]
        i += 1
    return out, settings
