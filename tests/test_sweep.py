"""Optuna sweeps over an experiment: completed, pruned and failed trials, resume, best export."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from gream_lit.experiment.cli import main
from gream_lit.experiment.pipeline import PipelineError, is_pipeline_file, load_experiment
from gream_lit.experiment.sweep import Sweep, objective_value, suggest

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
                "trainer": {
                    "include": str(REPO / "configs/trainer/cpu.yaml"),
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
    assert main(["sweep", "--config", str(config), "--n-trials", "3", "--runs_root", str(runs)]) == 0
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
