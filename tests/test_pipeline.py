"""The experiment pipeline: includes, references, resumable stage runs through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.experiment.cli import entry, main
from gream_lit.experiment.composition import PipelineError, is_pipeline_file, resolve_includes, set_dotted
from gream_lit.experiment.pipeline import resume_checkpoint
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import run_lock
from gream_lit.experiment.stage_configs import CHECKPOINT_CLASS as CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


class TinyData(L.LightningDataModule):
    """y = x @ w on a few random rows; enough to train and evaluate in milliseconds."""

    def __init__(self, n: int = 32, batch_size: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 4, generator=g)
        self.data = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))
        self.batch_size = batch_size

    def train_dataloader(self):
        return ResumableDataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    test_dataloader = val_dataloader


class TinyRegressor(L.LightningModule):
    """A linear model that can start from the previous stage's weights and write its own."""

    def __init__(
        self,
        init_path: str | None = None,
        out_path: str | None = None,
        lr: float = 0.05,
        step_sleep: float = 0.0,
        log_prefix: str = "tiny",
        dropout: float = 0.0,
        die_at_step: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)
        if init_path:
            self.layer.load_state_dict(torch.load(init_path))

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_train_start(self) -> None:
        with open(Path(self.trainer.default_root_dir) / "starts.txt", "a") as f:
            f.write(f"{self.current_epoch}\n")

    def training_step(self, batch, batch_idx):
        died = Path(self.trainer.default_root_dir) / "died"
        if self.global_step == self.hparams.die_at_step and not died.exists():
            died.touch()  # SIGKILL once, in the middle of an epoch; the rerun goes past this step
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.hparams.step_sleep)
        x, y = batch
        x = torch.nn.functional.dropout(x, self.hparams.dropout)  # draws from torch's stream, as LoRA dropout does
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.log(f"{self.hparams.log_prefix}/val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log(f"{self.hparams.log_prefix}/test/loss", self._loss(batch))

    def on_fit_end(self) -> None:
        if self.hparams.out_path:
            torch.save(self.layer.state_dict(), self.hparams.out_path)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TinyIndexer(TinyRegressor):
    """A TinyRegressor that also writes a semantic-ID index whose second ID is one token short."""

    def __init__(self, index_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index_path = index_path

    def on_fit_end(self) -> None:
        Path(self.index_path).write_text(json.dumps({"0": ["<|a_1|>", "<|b_1|>"], "1": ["<|a_2|>"]}))


def tiny_experiment(
    tmp_path: Path,
    max_epochs: int = 2,
    step_sleep: float = 0.0,
    dropout: float = 0.0,
    name: str = "tiny",
    **second: object,
) -> Path:
    """Two TinyRegressor stages; ``second`` adds keys to the second stage (``trainer``, ``data``, model
    ``init_args`` under ``model_args``)."""
    trainer = {
        "max_epochs": max_epochs,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    }
    exp = {
        "name": "tiny",
        "seed_everything": 3,
        "hardware": str(REPO / "configs/trainer/cpu.yaml"),
        "defaults": {"data": {"class_path": "test_pipeline.TinyData"}, "trainer": trainer},
        "stages": {
            "first": {
                "model": {
                    "class_path": "test_pipeline.TinyRegressor",
                    "init_args": {"out_path": "${stage_dir}/weights.pt", "log_prefix": "first"},
                },
                "artifacts": {"weights": "weights.pt"},
            },
            "second": {
                "model": {
                    "class_path": "test_pipeline.TinyRegressor",
                    "init_args": {
                        "init_path": "${prev.artifacts.weights|null}",
                        "log_prefix": "second",
                        "step_sleep": step_sleep,
                        "dropout": dropout,
                        **second.pop("model_args", {}),
                    },
                },
                **second,
            },
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_includes_merge_under_own_keys_and_null_drops_a_stage(tmp_path):
    full = tiny_experiment(tmp_path)
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(
        "include: tiny.yaml\nname: no_first\nstages:\n  first: null\n  second:\n    model: {init_args: {lr: 0.5}}\n"
    )
    exp = load_experiment(ablation)
    assert exp["name"] == "no_first" and list(exp["stages"]) == ["second"]
    assert exp["stages"]["second"]["model"]["init_args"]["lr"] == 0.5
    assert exp["stages"]["second"]["trainer"]["accelerator"] == "cpu"  # hardware: configs/trainer/cpu.yaml
    assert exp["defaults"]["trainer"]["max_epochs"] == 2
    assert is_pipeline_file(ablation) and is_pipeline_file(full)
    assert not is_pipeline_file(REPO / "configs/trainer/cpu.yaml")


def test_include_cycle_and_bad_override_are_clear_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\nx: 1\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(PipelineError, match="include cycle"):
        resolve_includes({"include": "a.yaml"}, tmp_path)
    with pytest.raises(PipelineError, match="not a mapping"):
        set_dotted({"a": 3}, "a.b", 1)


def test_two_stages_hand_off_rerun_skips_and_test_on_run_dir(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    weights = run / "first" / "weights.pt"
    second_cfg = yaml.safe_load((run / "second" / "config.yaml").read_text())
    assert second_cfg["model"]["init_args"]["init_path"] == str(weights)
    assert second_cfg["seed_everything"] == 3
    metrics = json.loads((run / "second" / "metrics.json").read_text())
    assert {"second/val/loss", "second/test/loss"} <= set(metrics)
    done = {s: (run / s / "DONE").read_text() for s in ("first", "second")}
    assert json.loads(done["first"])["artifacts"] == {"weights": str(weights)}

    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    assert {s: (run / s / "DONE").read_text() for s in done} == done
    assert (run / "second" / "starts.txt").read_text() == "0\n"

    assert main(["test", str(run), "--stage", "second"]) == 0
    tested = json.loads((run / "second" / "eval_direct" / "test_metrics.json").read_text())
    assert tested["second/test/loss"] == pytest.approx(metrics["second/test/loss"])

    saved = (run / "experiment.yaml").read_text()
    with pytest.raises(PipelineError, match="different config"):
        main(["fit", "--config", str(exp), "--run_dir", str(run), "--set", "stages.second.model.init_args.lr=0.2"])
    assert (run / "experiment.yaml").read_text() == saved  # refused before anything was written

    with run_lock(run), pytest.raises(PipelineError, match=r"is in use by pid \d+"):
        main(["fit", "--config", str(exp), "--run_dir", str(run)])  # a second process on the same run

    (run / "first" / "DONE").unlink()  # first reruns (resuming at its end), second is now stale
    with pytest.raises(PipelineError, match="'second' finished before stage 'first' was rerun"):
        main(["fit", "--config", str(exp), "--run_dir", str(run)])


def test_a_copied_run_directory_is_a_run_of_its_own(tmp_path):
    """After ``cp -a A B``: ``test B`` reads and writes B only, and ``fit`` on B finds its stages finished."""
    exp = tiny_experiment(tmp_path)
    a, b = tmp_path / "runs" / "A", tmp_path / "runs" / "B"
    assert main(["fit", "--config", str(exp), "--run_dir", str(a)]) == 0
    shutil.copytree(a, b, symlinks=True)
    shutil.rmtree(a / "first")  # B must not need anything of A's
    before = sorted((p, p.stat().st_mtime_ns) for p in a.rglob("*"))

    assert main(["test", str(b), "--stage", "second"]) == 0
    assert sorted((p, p.stat().st_mtime_ns) for p in a.rglob("*")) == before  # nothing written into A
    assert (b / "second" / "eval_direct" / "test_metrics.json").is_file()
    for stage in ("first", "second"):
        text = (b / stage / "config.yaml").read_text() + (b / stage / "DONE").read_text()
        assert str(a) not in text and str(b) in text
    second = yaml.safe_load((b / "second" / "config.yaml").read_text())
    assert second["model"]["init_args"]["init_path"] == str(b / "first" / "weights.pt")

    assert main(["fit", "--config", str(exp), "--run_dir", str(b)]) == 0  # no "different config" refusal
    assert (b / "second" / "starts.txt").read_text() == "0\n"  # finished stages were not rerun


def test_print_config_shows_every_stage_and_writes_nothing(tmp_path, capsys, monkeypatch):
    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert main(["fit", "--config", str(exp), "--run_dir", str(run), "--print_config"]) == 0
    out = capsys.readouterr().out
    assert f"# stage first: resolved in {run}" in out and f"{run}/first/weights.pt" in out
    assert "# stage second: references unresolved until earlier stages finish" in out
    assert "${prev.artifacts.weights|null}" in out and not run.exists()

    monkeypatch.setattr(sys, "argv", ["gream_lit", "fit", "--config", str(exp), "--stage", "nope"])
    assert entry() == 2  # a known error is one line, not a traceback
    assert capsys.readouterr().err.strip() == (
        "error: --stage 'nope' is not in this experiment; stages: ['first', 'second']"
    )


def test_dotted_overrides_work_as_in_lightning_cli_and_fit_help_shows_the_pipeline_options(tmp_path, capsys):
    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny"
    args = ["fit", "--config", str(exp), "--run_dir", str(run), "--print_config"]
    assert main([*args, "--stages.second.trainer.max_epochs", "5", "--stages.first.model.init_args.lr=0.2"]) == 0
    stages = capsys.readouterr().out.split("# stage ")
    assert "max_epochs: 5" in stages[2] and "max_epochs: 2" in stages[1] and "lr: 0.2" in stages[1]
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "usage (experiment file or run directory)" in out and "--print_config" in out and "--run_dir" in out
    assert "usage (a single-stage LightningCLI config)" in out and "--trainer.max_epochs" in out


def test_an_empty_done_record_and_a_deleted_artifact_are_clear_errors(tmp_path):
    exp = tiny_experiment(tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    (run / "first" / "DONE").write_text("")
    with pytest.raises(PipelineError, match=r"first/DONE: not a DONE record .*delete it and rerun fit"):
        main(["test", str(run)])
    (run / "first" / "DONE").unlink()
    assert main(["fit", "--config", str(exp), "--run_dir", str(tmp_path / "runs" / "again")]) == 0
    (tmp_path / "runs" / "again" / "first" / "weights.pt").unlink()  # a deleted hand-off
    (tmp_path / "runs" / "again" / "second" / "DONE").unlink()
    with pytest.raises(
        PipelineError,
        match=r"weights\.pt: stage 'first' wrote it, but it no longer exists; restore it, or delete .*first/DONE",
    ):
        main(["fit", "--config", str(exp), "--run_dir", str(tmp_path / "runs" / "again")])


def test_dropped_stage_leaves_reference_default_and_seed_names_run_dir(tmp_path, monkeypatch):
    full = tiny_experiment(tmp_path)
    with pytest.raises(PipelineError, match="'first' has not finished"):
        main(["fit", "--config", str(full), "--stage", "second", "--run_dir", str(tmp_path / "early")])
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text("include: tiny.yaml\nstages: {first: null}\n")  # name: the file stem
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(ablation), "--seed", "7", "--stage", "second"]) == 0
    cfg = yaml.safe_load((tmp_path / "runs/ablation_seed7/second/config.yaml").read_text())
    assert cfg["model"]["init_args"]["init_path"] is None and cfg["seed_everything"] == 7
    saved = yaml.safe_load((tmp_path / "runs/ablation_seed7/experiment.yaml").read_text())
    assert saved["name"] == "ablation" and saved["seed_everything"] == 7


def test_sigkill_mid_stage_then_rerun_resumes_from_last_checkpoint(tmp_path):
    exp = tiny_experiment(tmp_path, max_epochs=12, step_sleep=0.05)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gream_lit", "fit", "--config", str(exp), "--run_dir", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "second" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "second" / "DONE").exists()

    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    starts = [int(x) for x in (run / "second" / "starts.txt").read_text().split()]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] > 0
    record = json.loads((run / "second" / "DONE").read_text())
    assert record["resumed_from"] == str(last)
    assert torch.load(last, weights_only=False)["epoch"] == 11


@pytest.mark.parametrize("delay", [0.02, 0.3])
def test_a_run_killed_mid_stage_and_rerun_ends_bit_identical_to_an_uninterrupted_run(tmp_path, delay):
    """Shuffled batches and dropout draw from the random streams; the checkpoint carries them (RngState),
    so the resumed run draws what the uninterrupted run drew: same weights, same metrics, bit for bit."""
    exp = tiny_experiment(tmp_path, max_epochs=8, step_sleep=0.03, dropout=0.3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}

    def fit(run: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "gream_lit", "fit", "--config", str(exp), "--run_dir", str(run)]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert fit(whole).wait() == 0
    proc = fit(killed)
    last = killed / "second" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    time.sleep(delay)  # somewhere in a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert fit(killed).wait() == 0
    starts = (killed / "second" / "starts.txt").read_text().split()
    assert len(starts) == 2 and int(starts[1]) > 0  # it did resume, not start over

    def final(run: Path) -> tuple[dict, dict]:
        metrics = json.loads((run / "second" / "metrics.json").read_text())
        return metrics, torch.load(run / "second" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]

    (m_whole, w_whole), (m_killed, w_killed) = final(whole), final(killed)
    assert m_killed == m_whole
    assert all(torch.equal(w_killed[k], w_whole[k]) for k in w_whole)


def test_a_run_killed_in_the_middle_of_an_epoch_resumes_on_the_next_batch(tmp_path):
    """A checkpoint after every step, a SIGKILL at step 21 (epoch 1, batch 5 of 16): the loader's state in
    the checkpoint (ResumableDataLoader) redraws the epoch's order and skips the 5 batches already trained,
    so the resumed run ends bit-identical to the uninterrupted one."""
    every_step = {"callbacks": [{"class_path": CHECKPOINT, "init_args": {"every_n_train_steps": 1}}]}
    settings = dict(max_epochs=3, dropout=0.3, trainer=every_step, data={"init_args": {"batch_size": 2}})
    whole = tiny_experiment(tmp_path, name="whole", **settings)
    killed = tiny_experiment(tmp_path, name="killed", model_args={"die_at_step": 21}, **settings)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "OMP_NUM_THREADS": "1"}

    def fit(config: Path, run: Path) -> int:
        cmd = [sys.executable, "-m", "gream_lit", "fit", "--config", str(config), "--run_dir", str(run)]
        return subprocess.run(cmd, env=env, capture_output=True).returncode

    assert fit(whole, tmp_path / "whole") == 0
    assert fit(killed, tmp_path / "killed") == -signal.SIGKILL
    last = tmp_path / "killed" / "second" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 21  # saved after batch 5 of epoch 1
    assert fit(killed, tmp_path / "killed") == 0

    def final(run: Path) -> tuple[dict, dict]:
        metrics = json.loads((run / "second" / "metrics.json").read_text())
        return metrics, torch.load(run / "second" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]

    (m_whole, w_whole), (m_killed, w_killed) = final(tmp_path / "whole"), final(tmp_path / "killed")
    assert m_killed == m_whole
    assert all(torch.equal(w_killed[k], w_whole[k]) for k in w_whole)


def test_rng_states_survive_a_weights_only_checkpoint_round_trip(tmp_path):
    import random

    import numpy as np

    from gream_lit.experiment.rng_state import collect_rng_states, set_rng_states

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(collect_rng_states(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


def test_a_cut_short_last_checkpoint_falls_back_to_the_newest_readable_one(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"epoch": 1}, ckpts / "epoch=1-step=8.ckpt")
    torch.save({"epoch": 2}, ckpts / "last.ckpt")
    assert resume_checkpoint(ckpts) == str(ckpts / "last.ckpt")
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # killed while writing
    assert resume_checkpoint(ckpts) == str(ckpts / "epoch=1-step=8.ckpt")
    assert (ckpts / "last.ckpt.broken").read_bytes() == data[: len(data) // 2] and not (ckpts / "last.ckpt").exists()
    (ckpts / "epoch=1-step=8.ckpt").write_bytes(b"")
    torch.save({"epoch": 3}, ckpts / "last.ckpt")
    (ckpts / "last.ckpt").write_bytes(b"PK")
    assert resume_checkpoint(ckpts) is None  # nothing readable left: the stage starts over
    assert resume_checkpoint(tmp_path / "none") is None
    (ckpts / "last.ckpt").symlink_to("epoch=9-step=40.ckpt")  # a link whose target was removed
    (ckpts / "kept.ckpt").write_bytes(data)
    assert resume_checkpoint(ckpts) == str(ckpts / "kept.ckpt")


def test_real_baseline_configs_run_as_stages(tmp_path):
    """MostPop then SASRec, each stage including the repo's single-run experiment file."""
    data = tmp_path / "toy"
    data.mkdir()
    sequences = {str(u): [(u + t) % 12 for t in range(6)] for u in range(24)}
    (data / "toy.inter.json").write_text(json.dumps(sequences))
    (data / "toy.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(12)}))
    toy = {"data": {"init_args": {"data_dir": str(data), "batch_size": 8, "eval_batch_size": 8}}}
    exp = {
        "name": "baselines_toy",
        "stages": {
            "mostpop": {"include": str(REPO / "experiments/mostpop_scientific.yaml"), **toy},
            "sasrec": {
                "include": str(REPO / "experiments/sasrec_scientific.yaml"),
                "trainer": {"max_epochs": 2},
                "model": {"init_args": {"hidden": 16, "layers": 1}},
                **toy,
            },
        },
    }
    path = tmp_path / "baselines_toy.yaml"
    path.write_text(yaml.safe_dump(exp))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(path), "--run_dir", str(run)]) == 0
    for stage in ("mostpop", "sasrec"):
        metrics = json.loads((run / stage / "metrics.json").read_text())
        assert 0.0 <= metrics[f"{stage}/test/ndcg@10"] <= 1.0
    record = json.loads((run / "sasrec" / "DONE").read_text())
    assert Path(record["ckpt"]).name.startswith("best-epoch=") and Path(record["last_ckpt"]).is_file()
    assert list((run / "sasrec" / "sasrec_scientific").glob("events.out.tfevents*"))


@pytest.mark.parametrize("piece", sorted(p.name for p in (REPO / "configs/trainer").glob("*.yaml")))
def test_trainer_pieces_parse_as_trainer_arguments(piece):
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser()
    parser.add_lightning_class_args(L.Trainer, "trainer")
    cfg = parser.parse_object({"trainer": yaml.safe_load((REPO / "configs/trainer" / piece).read_text())})
    assert cfg.trainer.accelerator in ("cpu", "gpu")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(seed_everyting=7), r"unknown key 'seed_everyting' \(did you mean 'seed_everything'\?\)"),
        (lambda e: e.update(defualts={}), r"did you mean 'defaults'"),
        (
            lambda e: e["stages"]["first"].update(trainr={}),
            r"stage 'first': unknown key 'trainr' \(did you mean 'trainer'\?\)",
        ),
        (
            lambda e: e["stages"]["second"]["model"]["init_args"].update(init_path="${prev.artifacts.weight}"),
            r"stage 'second': \$\{prev.artifacts.weight\}: no earlier stage declares artifact 'weight'",
        ),
        (
            lambda e: e["stages"]["first"]["model"]["init_args"].update(init_path="${stages.second.artifacts.w}"),
            r"must name an earlier stage",
        ),
        (
            lambda e: e["stages"]["second"]["model"]["init_args"].update(lrr=0.1),
            r"stage 'second': model TinyRegressor: unknown key 'lrr' \(did you mean 'lr'\?\)",
        ),
        (
            lambda e: e["stages"]["second"].update(
                data={"class_path": "gream_lit.rl.rl_data.RLDataModule", "init_args": {"mode": "direct"}}
            ),
            r"stage 'second': data RLDataModule needs init_args 'index_path'",
        ),
        (  # a class taking **kwargs: its parents' parameters count, a typo still fails
            lambda e: e["stages"]["second"].update(
                data={
                    "class_path": "gream_lit.alignment.sft_data.AlignmentDataModule",
                    "init_args": {"index_path": "x.json", "val_user": 5},
                }
            ),
            r"data AlignmentDataModule: unknown key 'val_user' \(did you mean 'val_users'\?\)",
        ),
        (
            lambda e: e["stages"]["second"]["model"].update(class_path="test_pipeline.NoSuchModel"),
            r"stage 'second': model: class_path 'test_pipeline.NoSuchModel' cannot be imported",
        ),
    ],
)
def test_typos_and_dangling_references_fail_before_any_stage_runs(tmp_path, edit, message):
    exp = yaml.safe_load(tiny_experiment(tmp_path).read_text())
    edit(exp)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(PipelineError, match=message):
        load_experiment(path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [("thought_source", "code"), ("schedule", "oficial"), ("cot_layout", "shrt")],
)
def test_a_bad_value_beside_a_reference_fails_before_any_stage_runs(key, value):
    """The curriculum's data holds ``${prev.artifacts.index}``; a wrong value in another of its fields is
    still an error at load time, naming the field (not a failure after the stages before it)."""
    path = Path(__file__).parents[1] / "experiments" / "quickstart_short_reasoning.yaml"
    with pytest.raises(PipelineError, match=rf"stage 'curriculum': data\.{key}: Expected a typing\.Literal.*{value}"):
        load_experiment(path, {f"stages.curriculum.data.init_args.{key}": value})


def test_an_index_a_later_stage_cannot_read_fails_before_the_stages_in_between(tmp_path):
    """SRPO's compact prompts need IDs of one length: the index stage's output is checked as soon as it
    exists, before the stage between them spends its time."""
    from gream_lit.experiment import pipeline

    exp = yaml.safe_load(tiny_experiment(tmp_path, max_epochs=1).read_text())
    first = exp["stages"]["first"]
    first["model"] = {
        "class_path": "test_pipeline.TinyIndexer",
        "init_args": {"index_path": "${stage_dir}/D.index.json"},
    }
    first["artifacts"] = {"index": "D.index.json"}
    exp["stages"]["rl"] = {
        "model": {"class_path": "test_pipeline.TinyRegressor"},
        "data": {
            "class_path": "gream_lit.rl.rl_data.RLDataModule",
            "init_args": {"index_path": "${prev.artifacts.index}", "mode": "direct", "prompt_format": "compact"},
        },
    }
    path = tmp_path / "index_then_rl.yaml"
    path.write_text(yaml.safe_dump(exp))
    run = tmp_path / "run"
    with pytest.raises(
        PipelineError,
        match=r"stage 'rl' \(data\.init_args\) would fail when it starts: .*first/D\.index\.json: compact RL "
        r"prompts need IDs of one length, but this index has IDs of \[1, 2\] tokens",
    ):
        pipeline.run_experiment(load_experiment(path), run)
    assert (run / "first" / "DONE").exists() and not (run / "second").exists()


def test_a_misspelt_set_override_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match=r"unknown key 'stage' \(did you mean 'stages'\?\)"):
        load_experiment(tiny_experiment(tmp_path), {"stage.first.trainer.max_epochs": 1})


def test_an_experiments_mmap_threshold_applies_unless_the_variable_is_set(tmp_path, monkeypatch):
    from gream_lit.experiment import allocator, pipeline

    calls = []
    monkeypatch.setattr(allocator, "fix_mmap_threshold", lambda value: calls.append(value) or True)
    path = tiny_experiment(tmp_path, max_epochs=1)
    exp = load_experiment(path, {"mmap_threshold": 262144, "stages.second": None})
    monkeypatch.delenv("GREAM_MMAP_THRESHOLD", raising=False)
    pipeline.run_experiment(exp, tmp_path / "a")
    assert calls == [262144]
    monkeypatch.setenv("GREAM_MMAP_THRESHOLD", "0")
    pipeline.run_experiment(exp, tmp_path / "b")
    assert calls == [262144]  # the user's variable wins
    with pytest.raises(PipelineError, match=r"\.yaml: mmap_threshold: expected a byte count, got '4MB'"):
        load_experiment(path, {"mmap_threshold": "4MB"})
