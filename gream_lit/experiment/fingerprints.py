"""Fingerprints of the files a finished stage read and wrote, so a run cannot quietly change under it.

A stage's ``DONE`` record keeps the size and SHA-256 of its best checkpoint, its artifacts (files or
folders) and the files of earlier stages its config names (an index, an adapter). ``test``, ``predict``
and a rerun check them and refuse a file that changed, with its name: a checkpoint whose bytes were
flipped, an index rebuilt over a trained stage, a hand-off replaced or deleted.

Keys are paths relative to the run directory, and the run directory's own path inside small text files
(``adapter_config.json`` after a move) is hashed as a placeholder, so a copied or moved run keeps its
fingerprints (``relocation``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gream_lit.experiment.composition import PipelineError

_TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt")
_TEXT_LIMIT = 1 << 20  # bytes: only small text files can hold the run's path
_cache: dict[tuple, str] = {}
_VERB = {"inputs": "read", "outputs": "wrote"}


def _file_digest(path: Path, root: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, str(root))
    if key not in _cache:
        if path.suffix in _TEXT_SUFFIXES and stat.st_size <= _TEXT_LIMIT:
            data = path.read_bytes().replace(str(root).encode(), b"${run_dir}")
            _cache[key] = hashlib.sha256(data).hexdigest()
        else:
            with path.open("rb") as f:
                _cache[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _cache[key]


def fingerprint(path: Path, root: Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file, or of a folder (every file in it, by relative name)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.relative_to(path)}\0{_file_digest(p, root)}\0".encode())
        return {"size": sum(p.stat().st_size for p in files), "sha256": digest.hexdigest()}
    return {"size": path.stat().st_size, "sha256": _file_digest(path, root)}


def _run_paths(node: Any, root: Path) -> Iterator[Path]:
    """Every string in ``node`` that is an existing path inside ``root``."""
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _run_paths(value, root)
    elif isinstance(node, list):
        for value in node:
            yield from _run_paths(value, root)
    elif isinstance(node, str) and node.startswith(f"{root}/") and Path(node).exists():
        yield Path(node)


def stage_fingerprints(
    root: Path, stage_dir: Path, config: Mapping[str, Any], outputs: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"inputs": …, "outputs": …}``: the files (or artifact folders) of other stages that ``config``
    names, and ``outputs``."""
    # a whole stage folder (``${stages.X.dir}``) is not one input: re-tests and logs write into it
    inputs = {p for p in _run_paths(config, root) if stage_dir not in (p, *p.parents) and p.parent != root}
    return {
        "inputs": {str(p.relative_to(root)): fingerprint(p, root) for p in sorted(inputs)},
        "outputs": {
            str(Path(p).relative_to(root)): fingerprint(Path(p), root)
            for p in outputs
            if p and p.startswith(f"{root}/") and Path(p).exists()
        },
    }


def verify_fingerprints(root: Path, stage: str, record: Mapping[str, Any]) -> None:
    """Refuse a file that changed or went missing since ``stage`` finished (records without
    fingerprints, written before they existed, are not checked)."""
    for kind, entries in (record.get("fingerprints") or {}).items():
        fix = (
            f"restore it, or delete {root / stage / 'DONE'} and rerun fit to write it again"
            if kind == "outputs"
            else f"restore it, or delete {root / stage} and rerun fit to train the stage on it"
        )
        for rel, expected in entries.items():
            path = root / rel
            if not path.exists():
                raise PipelineError(f"{path}: stage {stage!r} {_VERB[kind]} it, but it no longer exists; {fix}")
            found = fingerprint(path, root)
            if found != expected:
                change = (
                    f"size {expected['size']} -> {found['size']} bytes"
                    if found["size"] != expected["size"]
                    else "same size, different content"
                )
                raise PipelineError(f"{path}: changed since stage {stage!r} {_VERB[kind]} it ({change}); {fix}")
