"""Optuna sweeps over an experiment: completed, pruned and failed trials, resume, best export."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import PipelineError, is_pipeline_file
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.sweep import Sweep, objective_value, suggest, worker_sampler

REPO = Path(__file__).resolve().parents[1]
METRIC = "tiny/val/score"


class ScoreData(L.LightningDataModule):
    def _loader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)

    train_dataloader = val_dataloader = test_dataloader = _loader


class ScoreModule(L.LightningModule):
    """Reports ``score`` as its validation metric, or fails in training when asked to."""

    def __init__(self, score: float = 0.5, fail: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail:
            raise RuntimeError("this trial fails on purpose")
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log(METRIC, self.hparams.score)

    def test_step(self, batch, batch_idx):
        self.log("tiny/test/score", self.hparams.score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def sweep_file(tmp_path: Path) -> Path:
    args = "stages.tiny.model.init_args"
    cfg = {
        "name": "sweep_tiny",
        "stages": {
            "tiny": {
                "model": {"class_path": "test_sweep.ScoreModule"},
                "data": {"class_path": "test_sweep.ScoreData"},
                "hardware": str(REPO / "configs/trainer/cpu.yaml"),
                "trainer": {
                    "max_epochs": 2,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "num_sanity_val_steps": 0,
                },
            }
        },
        "sweep": {
            "metric": METRIC,
            "direction": "maximize",
            "pruner": {"class_path": "optuna.pruners.MedianPruner", "init_args": {"n_startup_trials": 1}},
            "enqueue": [
                {f"{args}.score": 0.9, f"{args}.fail": False},
                {f"{args}.score": 0.8, f"{args}.fail": True},
                {f"{args}.score": 0.1, f"{args}.fail": False},
            ],
            "space": {
                f"{args}.score": {"type": "float", "low": 0.0, "high": 1.0},
                f"{args}.fail": {"type": "categorical", "choices": [False]},
            },
        },
    }
    path = tmp_path / "sweep_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_three_trials_complete_fail_prune_then_resume_and_export(tmp_path):
    config, runs = sweep_file(tmp_path), tmp_path / "runs"
    assert main(["sweep", "--config", str(config), "--n_trials", "3", "--runs_root", str(runs)]) == 0
    sweep = Sweep(config, runs)
    states = [t.state for t in sweep.study.trials]
    S = optuna.trial.TrialState
    assert states == [S.COMPLETE, S.FAIL, S.PRUNED]
    assert sweep.study.trials[0].value == pytest.approx(0.9)
    assert sweep.study.trials[2].intermediate_values == {0: pytest.approx(0.1)}
    assert (runs / "sweep_tiny" / "optuna.db").is_file()
    assert (runs / "sweep_tiny" / "trial_0" / "tiny" / "DONE").is_file()

    sweep.optimize(1)
    assert len(sweep.study.trials) == 4 and sweep.study.trials[3].params["stages.tiny.model.init_args.fail"] is False

    best = Path(sweep.export_best())
    exp = load_experiment(best)
    assert is_pipeline_file(best) and "sweep" not in exp and exp["name"] == "sweep_tiny_best"
    assert exp["stages"]["tiny"]["model"]["init_args"]["score"] == pytest.approx(sweep.study.best_value)


def test_space_spec_errors_name_the_key():
    study = optuna.create_study()
    with pytest.raises(PipelineError, match="sweep.space.a.b: type must be"):
        suggest(study.ask(), {"a.b": {"type": "uniform", "low": 0, "high": 1}})
    with pytest.raises(PipelineError, match="sweep.space.lr: bad spec"):
        suggest(study.ask(), {"lr": {"type": "float", "low": 0.1}})
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}, "n": {"type": "int", "low": 1, "high": 3}}
    params = suggest(study.ask(), space)
    assert 1e-4 <= params["lr"] <= 1e-1 and params["n"] in (1, 2, 3)


def test_objective_prefers_the_monitored_best_score():
    metrics = {METRIC: 0.3}
    assert objective_value({"monitor": METRIC, "best_score": 0.7}, metrics, METRIC) == 0.7
    assert objective_value({"monitor": None, "best_score": 0.7}, metrics, METRIC) == 0.3
    with pytest.raises(PipelineError, match="logged no 'other'"):
        objective_value({"monitor": None}, metrics, "other")


def test_worker_samplers_are_seeded_apart():
    spec = {"class_path": "optuna.samplers.TPESampler", "init_args": {"seed": 5}}
    assert worker_sampler(spec, 2)["init_args"]["seed"] == 7 and spec["init_args"]["seed"] == 5
    assert worker_sampler({"class_path": "optuna.samplers.RandomSampler"}, 3)["init_args"] == {}
    with pytest.raises(PipelineError, match="--worker must be >= 0"):
        worker_sampler(spec, -1)


def two_worker_sweep(tmp_path: Path) -> Path:
    path = sweep_file(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["sweep"].pop("enqueue")
    cfg["sweep"]["pruner"] = None
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_workers_on_one_study_never_run_the_same_trial(tmp_path):
    """The issue's reproduction: with one hard-coded seed, worker B's first trial equalled worker A's."""
    config, runs = two_worker_sweep(tmp_path), tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gream_lit", "sweep", "--config", str(config), "--n_trials", "3"]
    workers = [
        subprocess.Popen([*cmd, "--runs_root", str(runs), "--worker", str(w)], env=env, stdout=subprocess.DEVNULL)
        for w in (0, 1)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    trials = Sweep(config, runs).study.trials
    scores = [t.params["stages.tiny.model.init_args.score"] for t in trials]
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(set(scores)) == 6
    assert {p.name for p in (runs / "sweep_tiny").glob("trial_*")} == {f"trial_{t.number}" for t in trials}


def test_a_dead_workers_trial_is_failed_and_retried_in_its_run_directory(tmp_path):
    config, runs = two_worker_sweep(tmp_path), tmp_path / "runs"
    cfg = yaml.safe_load(config.read_text())
    cfg["sweep"].update(heartbeat_interval=1, grace_period=2)
    config.write_text(yaml.safe_dump(cfg))
    sweep = Sweep(config, runs)
    key = "stages.tiny.model.init_args.score"
    dead = sweep.study.ask({key: optuna.distributions.FloatDistribution(0.0, 1.0)})
    sweep.study._storage.record_heartbeat(dead._trial_id)  # its worker beat once, then died
    time.sleep(3)
    sweep.optimize(1)
    trials = sweep.study.trials
    S = optuna.trial.TrialState
    assert [t.state for t in trials] == [S.FAIL, S.COMPLETE]
    assert trials[1].params[key] == dead.params[key]
    assert trials[1].user_attrs["run_dir"] == str((runs / "sweep_tiny" / "trial_0").resolve())


def test_stages_before_the_swept_one_run_once_and_every_trial_starts_from_them(tmp_path):
    config, runs = two_worker_sweep(tmp_path), tmp_path / "runs"
    cfg = yaml.safe_load(config.read_text())
    cfg["stages"] = {"up": copy.deepcopy(cfg["stages"]["tiny"]), **cfg["stages"]}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))  # stage order is pipeline order
    sweep = Sweep(config, runs)
    assert sweep.upstream_stages() == ["up"]
    sweep.optimize(2)
    root = runs / "sweep_tiny"
    done = json.loads((root / "upstream" / "up" / "DONE").read_text())
    for n in (0, 1):
        copied = json.loads((root / f"trial_{n}" / "up" / "DONE").read_text())
        assert copied["finished"] == done["finished"]  # not trained again
        assert copied["ckpt"].startswith(str((root / f"trial_{n}").resolve()))  # re-pointed at the trial
        assert (root / f"trial_{n}" / "tiny" / "DONE").is_file()
    assert not (root / "upstream" / "tiny").exists()
    ckpt = Path(done["ckpt"])
    assert os.path.samefile(ckpt, root / "trial_0" / "up" / ckpt.relative_to(root / "upstream" / "up"))


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on loopback; as root, the Debian package's binaries run as user postgres
    (the server refuses to run as root)."""
    import pwd
    import shutil
    import socket
    import tempfile

    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="the psycopg2 driver is not installed (pip install psycopg2-binary)")
    prefix = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="gream_pg_"))  # not under pytest's root-only temp folder
    root.chmod(0o777)
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True)

    try:
        init = run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
        if init.returncode != 0:
            pytest.skip(f"initdb failed, no server to test against: {init.stderr.strip()[-300:]}")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        start = run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
        if start.returncode != 0:
            pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_study_in_a_real_postgresql_server(tmp_path, postgres):
    """The many-machine case as users run it: one RDB study, two worker processes, no duplicated trial."""
    config, runs = two_worker_sweep(tmp_path), tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gream_lit", "sweep", "--config", str(config), "--n_trials", "2"]
    cmd += ["--storage", postgres, "--runs_root", str(runs)]
    workers = [subprocess.Popen([*cmd, "--worker", str(w)], env=env, stdout=subprocess.DEVNULL) for w in (0, 1)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    trials = Sweep(config, runs, storage=postgres).study.trials
    scores = [t.params["stages.tiny.model.init_args.score"] for t in trials]
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(set(scores)) == 4
