"""Rewriting an experiment file (composing it from ``configs/`` pieces, dropping values that restate a
code default) must not change what it runs: every file's resolved stage configs are compared with the
snapshot taken before the rewrite (``tests/data/resolved_experiments.json``).

After a change that is meant to alter what a file runs, rewrite the snapshot and review its diff:
``GREAM_WRITE_SNAPSHOT=1 python -m pytest tests/test_config_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from config_snapshot import snapshot

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
FILES = sorted(EXPERIMENTS.glob("*.yaml"))
SNAPSHOT = Path(__file__).parent / "data" / "resolved_experiments.json"
# overlays are parsed on top of the file they change (``--config base --config overlay``)
OVERLAYS = {"rl_scientific_smoke": "rl_scientific"}


def _snapshot_of(path: Path, tmp_path: Path) -> dict:
    base = None
    if path.stem in OVERLAYS:
        base_path = EXPERIMENTS / f"{OVERLAYS[path.stem]}.yaml"
        base = lambda: snapshot(base_path, tmp_path / "base")  # noqa: E731
    return snapshot(path, tmp_path / "run", base)


def test_every_experiment_file_resolves_to_its_snapshot(tmp_path: Path) -> None:
    current = {p.stem: _snapshot_of(p, tmp_path / p.stem) for p in FILES}
    if os.environ.get("GREAM_WRITE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(current) == sorted(expected), "experiment files added or removed: rewrite the snapshot"
    for name in expected:
        assert current[name] == expected[name], f"experiments/{name}.yaml resolves differently from its snapshot"


def test_snapshot_drops_restated_defaults(tmp_path: Path) -> None:
    """A value equal to the code default and a missing one give the same snapshot."""
    base = EXPERIMENTS / "mostpop_scientific.yaml"
    text = base.read_text()
    restated = tmp_path / "restated.yaml"
    restated.write_text(text.replace("trainer:\n", "trainer:\n  max_time: null\n  benchmark: null\n", 1))
    assert "max_time: null" in restated.read_text()
    assert snapshot(restated, tmp_path / "a") == snapshot(base, tmp_path / "b")
