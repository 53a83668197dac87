"""A stage's run-time ``${...}`` references, resolved against its run directory just before the stage starts.

Which references there are (``${prev.…}``, ``${stages.…}``, ``${artifacts.…}``, ``${run_dir}``,
``${stage_dir}``, ``${stage_name}``) and what a ``|`` default does is described in docs/configs.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gream_lit.experiment.composition import REF, PipelineError
from gream_lit.experiment.run_directory import RunDir


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
