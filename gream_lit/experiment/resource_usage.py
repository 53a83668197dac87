"""Wall time and peak resident memory of every phase of a run: load, train, validate, test, predict.

A process's ``ru_maxrss`` only says the largest footprint it ever had; to find which phase sets it (the
longest training batches, beam-search KV caches, a second model copy) a background thread samples the
resident set every ``interval`` seconds and charges it to the phase running then. Every stage of a
pipeline writes ``resources.json`` beside its metrics; ``benchmarks/memory.py`` tabulates them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import lightning as L
import psutil

FILE_NAME = "resources.json"


class ResourceUsage(L.Callback):
    """Samples RSS in a daemon thread and keeps, per phase, the peak (GB) and the seconds spent.

    Phases: ``load`` (from the trainer's creation: data and model building), ``train`` (training batches), ``validate``
    (validation inside fit or on its own) and ``test``. A fit followed by a test in the same process
    (``GreamCLI``) adds to the same record.

    Args:
        dirpath: folder of ``resources.json``; ``None`` = the logger's folder (else the root dir).
        interval: seconds between samples.
    """

    def __init__(self, dirpath: str | Path | None = None, interval: float = 0.2) -> None:
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.interval = interval
        self.phases: dict[str, dict[str, float]] = {}
        self._phase: str | None = None
        self._since = 0.0
        self._stack: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        # the trainer is built just before fit/test, whose data-module setup precedes the callbacks'
        # setup hook: start sampling here so that building the data counts as ``load``
        self._start()

    # ---- sampling -----------------------------------------------------------------------------
    def _sample(self) -> None:
        rss = self._process.memory_info().rss / 2**30
        phase = self._phase
        if phase is not None:
            record = self.phases.setdefault(phase, {"peak_rss_gb": 0.0, "seconds": 0.0})
            record["peak_rss_gb"] = max(record["peak_rss_gb"], round(rss, 3))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _start(self) -> None:
        """Enter ``load`` and sample until ``teardown`` (again for a test that follows a fit)."""
        self._enter("load")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="resource-usage", daemon=True)
        self._thread.start()

    def _enter(self, phase: str) -> None:
        self._switch(phase)
        self._stack.append(phase)

    def _leave(self) -> None:
        if self._stack:
            self._stack.pop()
        self._switch(self._stack[-1] if self._stack else None)

    def _switch(self, phase: str | None) -> None:
        now = time.perf_counter()
        self._sample()
        if self._phase is not None:
            self.phases[self._phase]["seconds"] = round(self.phases[self._phase]["seconds"] + now - self._since, 2)
        self._phase, self._since = phase, now
        self._sample()

    # ---- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._thread is None:  # a second run (the test after fit): its own loading
            self._start()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stack = ["train"]
        self._switch("train")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter("validate")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._leave()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stack = ["test"]
        self._switch("test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stack = ["predict"]
        self._switch("predict")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._stack = []
        self._switch(None)
        if trainer.is_global_zero:
            name = FILE_NAME if "train" in self.phases else f"{getattr(stage, 'value', stage)}_{FILE_NAME}"
            self.write(Path(self.dirpath or trainer.log_dir or trainer.default_root_dir) / name)

    def write(self, path: Path) -> Path:
        """Per phase ``peak_rss_gb`` and ``seconds``, plus the overall peak. A run that trains writes
        ``resources.json``; a later ``validate``/``test``/``predict`` of it, ``<command>_resources.json``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        peak = max((p["peak_rss_gb"] for p in self.phases.values()), default=0.0)
        path.write_text(json.dumps({"peak_rss_gb": peak, "phases": self.phases}, indent=2))
        return path


def read_resources(folder: str | Path, name: str = FILE_NAME) -> dict | None:
    """The ``resources.json`` of a stage folder, or ``None`` when the stage wrote none."""
    path = Path(folder) / name
    return json.loads(path.read_text()) if path.is_file() else None
