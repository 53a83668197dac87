"""A run directory's paths and records: each stage's ``DONE`` record and metrics, and the lock a ``fit`` holds.

What a run directory holds and promises is described in docs/run_directories.md.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from gream_lit.experiment.composition import PipelineError, read_yaml
from gream_lit.experiment.fingerprints import stage_fingerprints
from gream_lit.inference.bundle import add_metrics


class RunDir:
    """Paths and records of one experiment run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def last_ckpt(self, stage: str) -> Path:
        return self.checkpoint_dir(stage) / "last.ckpt"

    def done(self, stage: str) -> dict[str, Any] | None:
        """The DONE record of a finished stage, else None."""
        marker = self.stage_dir(stage) / "DONE"
        if not marker.is_file():
            return None
        try:
            record = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise PipelineError(
                f"{marker}: not a DONE record ({err.msg}; the file is empty or cut short); delete it and rerun "
                f"fit to finish stage {stage!r} again from its last checkpoint"
            ) from err
        if not isinstance(record, dict) or "finished" not in record:
            raise PipelineError(f"{marker}: not a DONE record (no 'finished' time); delete it and rerun fit")
        return record

    def metrics(self, stage: str) -> dict[str, float]:
        path = self.stage_dir(stage) / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def experiment(self) -> dict[str, Any]:
        return read_yaml(self.root / "experiment.yaml")


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers: what ``metrics.json`` and a ``DONE`` record may hold."""
    out = {}
    for key, value in metrics.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[key] = value
    return out


def write_records(
    exp: Mapping[str, Any], run: RunDir, stage: str, trainer: L.Trainer, metrics: dict[str, float], resume: str | None
) -> None:
    """``metrics.json`` and the ``DONE`` record that later stages' references and ``report`` read."""
    stage_dir = run.stage_dir(stage)
    artifacts = {}
    for key, rel in (exp["stages"][stage].get("artifacts") or {}).items():
        path = stage_dir / rel
        if not path.exists():
            raise PipelineError(f"stage {stage!r} declared artifact {key!r} at {path} but did not write it")
        artifacts[key] = str(path)
    ckpt_cb = trainer.checkpoint_callback
    last_path = ckpt_cb.last_model_path if ckpt_cb else ""
    record = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "dir": str(stage_dir),
        "ckpt": (ckpt_cb.best_model_path or last_path) if ckpt_cb else "",
        "last_ckpt": last_path,
        "resumed_from": resume,
        "monitor": ckpt_cb.monitor if ckpt_cb else None,
        "best_score": finite_metrics({"s": ckpt_cb.best_model_score}).get("s") if ckpt_cb else None,
        "artifacts": artifacts,
    }
    for path in artifacts.values():
        add_metrics(path, metrics)  # the hand-off's model card carries the metrics it was tested with
    config = read_yaml(stage_dir / "config.yaml")
    record["fingerprints"] = stage_fingerprints(run.root, stage_dir, config, [record["ckpt"], *artifacts.values()])
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (stage_dir / "DONE").write_text(json.dumps(record, indent=2))


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<run>/.lock`` while this process runs stages in it.

    A second ``fit`` on the same run directory fails at once instead of training every stage twice.
    The lock is the kernel's (``flock``), so a killed process releases it and a rerun resumes. Only the
    launching process takes it: ranks that Lightning starts for DDP (``LOCAL_RANK``/``RANK`` set) share it.
    """
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PipelineError(
                f"{root} is in use by {holder}; wait for it to finish or use another --run_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
