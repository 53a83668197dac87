"""Optuna hyperparameter search over an experiment: ``python -m gream_lit sweep --config X --n_trials N``.

A sweep file is an experiment file (``stages:``, usually through ``include:``) plus a ``sweep:`` section::

    sweep:
      metric: sasrec/val/ndcg@10        # a key of the objective stage's metrics.json
      direction: maximize
      stage: sasrec                     # objective stage (default: the last one)
      storage: null                     # default sqlite:///<runs_root>/<name>/optuna.db; any DB URL
      sampler: {class_path: optuna.samplers.TPESampler, init_args: {seed: 0}}   # worker w uses seed + w
      heartbeat_interval: 60            # seconds; a trial whose worker stopped beating for
      grace_period: 180                 #   grace_period is failed and retried (max_retry times)
      max_retry: 1
      pruner: {class_path: optuna.pruners.MedianPruner, init_args: {n_warmup_steps: 2}}  # null: none
      enqueue: [{stages.sasrec.model.init_args.lr: 0.001}]   # trials to run first
      space:
        stages.sasrec.model.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        stages.sasrec.model.init_args.num_layers: {type: int, low: 1, high: 3}
        stages.sasrec.model.init_args.hidden_size: {type: categorical, choices: [32, 64]}

Each trial is a pipeline run in ``<runs_root>/<name>/trial_<n>``; the objective stage gets a pruning
callback that reports the metric after every validation. The trial's value is the best score of the
stage's ModelCheckpoint when it monitors the metric (the tested checkpoint), else the last logged value.
The study resumes (``load_if_exists``), failed trials are recorded and the study goes on, and the best
trial is written as a ready experiment (``best.yaml``: ``python -m gream_lit fit --config .../best.yaml``).

Stages before the first one a swept key touches (an index, say, when the space is the alignment's
learning rates) are the same in every trial: they run once in ``<runs_root>/<name>/upstream`` and each
trial starts from a copy of them (checkpoints and weights hard-linked, records re-pointed at the trial).

Many workers, one study: start each with the same ``--storage`` (e.g. ``postgresql://...``) and its own
``--worker`` number. Worker ``w`` seeds its sampler with ``seed + w``, so no two workers propose the same
trials. Workers beat a heartbeat; when one dies, the next worker to start a trial fails the dead one's
trial and retries it with the same parameters in the same run directory, where it resumes from the
checkpoint the dead worker left.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from optuna_integration import PyTorchLightningPruningCallback

from gream_lit.experiment.composition import PipelineError, set_dotted
from gream_lit.experiment.pipeline import run_experiment
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import import_class

log = logging.getLogger(__name__)

DEFAULT_SAMPLER = {"class_path": "optuna.samplers.TPESampler", "init_args": {"seed": 0}}
HEARTBEAT = {"heartbeat_interval": 60, "grace_period": 180, "max_retry": 1}
DEFAULT_PRUNER = {"class_path": "optuna.pruners.MedianPruner", "init_args": {}}


def instantiate(spec: Mapping[str, Any]) -> Any:
    """``{class_path, init_args}`` -> object, as LightningCLI does for models."""
    if "class_path" not in spec:
        raise PipelineError(f"expected {{class_path, init_args}}, got {dict(spec)}")
    return import_class(spec["class_path"])(**(spec.get("init_args") or {}))


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per dotted key from ``float``/``int``/``categorical`` specs."""
    params = {}
    for key, spec in space.items():
        kind = spec.get("type")
        args = {k: v for k, v in spec.items() if k != "type"}
        try:
            if kind == "float":
                params[key] = trial.suggest_float(key, float(args.pop("low")), float(args.pop("high")), **args)
            elif kind == "int":
                params[key] = trial.suggest_int(key, int(args.pop("low")), int(args.pop("high")), **args)
            elif kind == "categorical":
                params[key] = trial.suggest_categorical(key, list(args.pop("choices")))
            else:
                raise PipelineError(f"sweep.space.{key}: type must be float, int or categorical, got {kind!r}")
        except (KeyError, TypeError) as e:
            raise PipelineError(f"sweep.space.{key}: bad spec {dict(spec)} ({e})") from e
    return params


def worker_sampler(spec: Mapping[str, Any], worker: int) -> dict[str, Any]:
    """The sampler spec with ``seed + worker`` (a sampler without a seed stays unseeded)."""
    if worker < 0:
        raise PipelineError(f"--worker must be >= 0, got {worker}")
    spec = copy.deepcopy(dict(spec))
    args = spec.setdefault("init_args", {}) or {}
    if args.get("seed") is not None:
        args["seed"] = int(args["seed"]) + worker
    spec["init_args"] = args
    return spec


def rdb_storage(url: str, cfg: Mapping[str, Any]) -> optuna.storages.RDBStorage:
    """An RDB storage whose workers beat a heartbeat; a trial without one for ``grace_period`` seconds
    fails and is retried up to ``max_retry`` times (``RetryHeartbeatStaleTrialCallback``)."""
    opts = {k: cfg.get(k, v) for k, v in HEARTBEAT.items()}
    if opts["grace_period"] <= opts["heartbeat_interval"]:
        raise PipelineError(f"sweep.grace_period must exceed sweep.heartbeat_interval, got {opts}")
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=opts["heartbeat_interval"],
        grace_period=opts["grace_period"],
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=opts["max_retry"]),
    )


def open_study(url: str, cfg: Mapping[str, Any], **kwargs: Any) -> optuna.Study:
    """Create or load the study; workers started together race to create the schema and the study, so a
    database error is retried a few times before it is raised."""
    for attempt in range(4):
        try:
            return optuna.create_study(storage=rdb_storage(url, cfg), load_if_exists=True, **kwargs)
        except sqlalchemy.exc.DBAPIError:
            time.sleep(0.5 * (attempt + 1))
    return optuna.create_study(storage=rdb_storage(url, cfg), load_if_exists=True, **kwargs)


def with_params(exp: Mapping[str, Any], params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The experiment with sweep values set, renamed, without its ``sweep`` section."""
    out = copy.deepcopy({k: v for k, v in exp.items() if k != "sweep"})
    for key, value in params.items():
        set_dotted(out, key, value)
    out["name"] = name
    return out


def objective_value(record: Mapping[str, Any], metrics: Mapping[str, float], metric: str) -> float:
    """The checkpoint callback's best score when it monitors ``metric``, else the last logged value.

    With early stopping the last validation can trail the best epoch by the patience; the best
    checkpoint is also the one that was tested.
    """
    if record.get("monitor") == metric and record.get("best_score") is not None:
        return float(record["best_score"])
    if metric not in metrics:
        raise PipelineError(f"the objective stage logged no {metric!r}; it logged {sorted(metrics)}")
    return metrics[metric]


class Sweep:
    """One study over one experiment; ``optimize`` may be called again to add trials."""

    def __init__(
        self, config: str | Path, runs_root: str | Path = "runs", storage: str | None = None, worker: int = 0
    ) -> None:
        self.exp = load_experiment(config)
        cfg = self.exp.get("sweep") or {}
        for key in ("metric", "space"):
            if not cfg.get(key):
                raise PipelineError(f"{config}: sweep.{key} is required")
        self.cfg = cfg
        self.name = self.exp["name"]
        self.root = Path(runs_root) / self.name
        self.stage = cfg.get("stage") or list(self.exp["stages"])[-1]
        if self.stage not in self.exp["stages"]:
            raise PipelineError(f"{config}: sweep.stage {self.stage!r} is not one of {list(self.exp['stages'])}")
        self.root.mkdir(parents=True, exist_ok=True)
        pruner = cfg.get("pruner", DEFAULT_PRUNER)
        self.prune = pruner is not None
        url = storage or cfg.get("storage") or f"sqlite:///{self.root.resolve() / 'optuna.db'}"
        self.study = open_study(
            url,
            cfg,
            study_name=self.name,
            sampler=instantiate(worker_sampler(cfg.get("sampler") or DEFAULT_SAMPLER, worker)),
            pruner=instantiate(pruner) if self.prune else optuna.pruners.NopPruner(),
            direction=cfg.get("direction", "maximize"),
        )

    def upstream_stages(self) -> list[str]:
        """Stages before the first one a swept key touches (none when a key is not under ``stages.``)."""
        order = list(self.exp["stages"])
        touched = []
        for key in self.cfg["space"]:
            parts = key.split(".")
            if len(parts) < 2 or parts[0] != "stages" or parts[1] not in order:
                return []
            touched.append(order.index(parts[1]))
        return order[: min(touched)]

    def _seed_upstream(self, run_dir: Path) -> None:
        """Run the upstream stages once (one worker at a time) and copy them into ``run_dir``."""
        stages = self.upstream_stages()
        if not stages:
            return
        upstream = self.root / "upstream"
        base = with_params(self.exp, {}, f"{self.name}_upstream")
        with (self.root / "upstream.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other workers wait here until the stages are done
            try:
                for stage in stages:
                    run_experiment(base, upstream, only=stage)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        for stage in stages:
            if not (run_dir / stage).exists():
                shutil.copytree(upstream / stage, run_dir / stage, copy_function=_link_or_copy)

    def objective(self, trial: optuna.Trial) -> float:
        # a retried trial continues the dead worker's run directory (and resumes from its checkpoint)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        number = trial.number if number is None else number
        exp = with_params(self.exp, suggest(trial, self.cfg["space"]), f"{self.name}_trial{number}")
        run_dir = self.root / f"trial_{number}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        metric = self.cfg["metric"]
        callbacks = [PyTorchLightningPruningCallback(trial, monitor=metric)] if self.prune else []
        self._seed_upstream(run_dir)
        results = run_experiment(exp, run_dir, callbacks={self.stage: callbacks})
        return objective_value(RunDir(run_dir).done(self.stage), results[self.stage], metric)

    def optimize(self, n_trials: int, timeout: float | None = None) -> None:
        for params in self.cfg.get("enqueue") or []:
            self.study.enqueue_trial(dict(params), skip_if_exists=True)
        self.study.optimize(self.objective, n_trials=n_trials, timeout=timeout, catch=(Exception,))

    def export_best(self, path: str | Path | None = None) -> Path | None:
        """Write the best finished trial as an experiment file; None while no trial has finished."""
        if not self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            return None
        best = self.study.best_trial
        path = Path(path) if path else self.root / "best.yaml"
        exp = with_params(self.exp, best.params, f"{self.name}_best")
        header = f"# best of study {self.name!r}: trial {best.number}, {self.cfg['metric']} = {best.value:.6g}\n"
        path.write_text(header + yaml.safe_dump(exp, sort_keys=False))
        return path

    def summary(self) -> str:
        """One line per trial: number, state, value and parameters by their last key."""
        rows = [f"{'trial':>5}  {'state':<8}  {'value':>10}  params"]
        for t in self.study.trials:
            value = "" if t.value is None else f"{t.value:.4f}"
            params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in t.params.items())
            rows.append(f"{t.number:>5}  {t.state.name:<8}  {value:>10}  {params}")
        return "\n".join(rows)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link weights and checkpoints (read-only once a stage is done); copy the text records, which
    the trial re-points at itself."""
    if Path(src).suffix in (".ckpt", ".safetensors", ".bin", ".pt", ".npy", ".gguf"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gream_lit sweep", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--config", required=True, help="sweep file: an experiment with a 'sweep:' section")
    p.add_argument("--n_trials", type=int, default=10, help="trials to add to the study")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite file in the sweep's run directory)")
    p.add_argument("--runs_root", default="runs", help="trials go to <runs_root>/<name>/trial_<n>")
    p.add_argument("--export", help="where to write the best experiment (default <runs_root>/<name>/best.yaml)")
    p.add_argument("--worker", type=int, default=0, help="this worker's number: its sampler seed is seed + worker")
    args = p.parse_args(argv)
    sweep = Sweep(args.config, args.runs_root, args.storage, args.worker)
    sweep.optimize(args.n_trials, args.timeout)
    print(sweep.summary(), flush=True)
    best = sweep.export_best(args.export)
    print(f"best experiment: {best}" if best else "no trial finished; nothing exported", flush=True)
    return 0 if best else 1
