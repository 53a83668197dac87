"""Check a stage's whole config as its LightningCLI job will parse it, before any stage runs.

``GreamCLI``'s own parser (jsonargparse) checks every nested key and type against the classes'
signatures (``lora: {rr: 8}``, a misspelt ``rollout`` key, ``num_beams: 0`` where the type is
``PositiveInt``) and stops before anything is instantiated, so no model or data is loaded. References
to what earlier stages will write are still ``${...}`` strings here: a field that holds one is
checked when its stage starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from jsonargparse import ArgumentError

from gream_lit.experiment.composition import REF, PipelineError
from gream_lit.experiment.lightning_cli import GreamCLI

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
        text = str(err)
        if "${" in text:  # a value an earlier stage provides: checked when this stage starts
            return
        raise PipelineError(f"{where}: {summarize(text)}") from err
