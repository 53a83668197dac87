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

import yaml
from config_snapshot import snapshot, without_defaults

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
FILES = sorted(EXPERIMENTS.glob("*.yaml"))
SNAPSHOT = Path(__file__).parent / "data" / "resolved_experiments.json"


def test_every_experiment_file_resolves_to_its_snapshot(tmp_path: Path) -> None:
    current = {p.stem: snapshot(p, tmp_path / p.stem) for p in FILES}
    if os.environ.get("GREAM_WRITE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(current) == sorted(expected), "experiment files added or removed: rewrite the snapshot"
    changed = {
        name: _differences(expected[name], current[name]) for name in expected if current[name] != expected[name]
    }
    assert not changed, f"files resolve differently from the snapshot: {changed}"


def _differences(old, new, where: str = "") -> list[str]:
    """Paths at which two snapshots differ, with both values (for a readable failure)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{where}.{k}")]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def test_snapshot_drops_restated_defaults(tmp_path: Path) -> None:
    """A value equal to the code default and a missing one give the same snapshot."""
    base = EXPERIMENTS / "mostpop_scientific.yaml"
    text = base.read_text()
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    restated = tmp_path / "restated.yaml"
    restated.write_text(text.replace("trainer:\n", "trainer:\n  max_time: null\n  benchmark: null\n", 1))
    assert "max_time: null" in restated.read_text()
    assert snapshot(restated, tmp_path / "a") == snapshot(base, tmp_path / "b")


def _restated(node: object) -> list[str]:
    """Paths whose value equals the code's default (``null`` is how a file resets an included value, so it
    is never counted)."""
    dropped: list[tuple[str, object]] = []
    without_defaults(node, dropped=dropped)
    return [path for path, value in dropped if value is not None]


# values equal to the code default that switch back what a file they are merged over sets otherwise:
# quickstart_short_reasoning.yaml merges this piece over the quickstart's direct-mode rl stage
RESETS = {
    "configs/stages/srpo_short_cpu.yaml:.model.init_args.mode",
    "configs/stages/srpo_short_cpu.yaml:.data.init_args.mode",
}


def test_no_experiment_file_restates_a_code_default() -> None:
    restated = [
        f"{path.relative_to(ROOT)}:{key}"
        for path in [*FILES, *sorted((ROOT / "configs").rglob("*.yaml"))]
        for key in _restated(yaml.safe_load(path.read_text()))
        if f"{path.relative_to(ROOT)}:{key}" not in RESETS
    ]
    assert not restated, f"values equal to the code default (drop them): {restated}"
