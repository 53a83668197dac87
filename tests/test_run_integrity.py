"""Runs that refuse to lie: fingerprinted inputs and outputs, foreign checkpoints, re-tests beside the fit's
results, every stage's whole config checked before the first stage, one-line errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_pipeline import tiny_experiment

from gream_lit.experiment import pipeline_cli
from gream_lit.experiment.cli import entry, main
from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.relocation import adopt_moved_run
from gream_lit.experiment.report import write_report


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished two-stage tiny run (experiment file, run directory), copied by each test that changes it."""
    tmp = tmp_path_factory.mktemp("finished")
    exp = tiny_experiment(tmp, max_epochs=1)
    run = tmp / "runs" / "tiny"
    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    return exp, run


def _copy(finished, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished[1], run, symlinks=True)
    return run


def _best_ckpt(run: Path, stage: str) -> Path:
    """The stage's best checkpoint inside ``run`` (a copy's DONE still names the original until it is read)."""
    outputs = json.loads((run / stage / "DONE").read_text())["fingerprints"]["outputs"]
    return run / next(p for p in outputs if p.endswith(".ckpt"))


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_done_records_fingerprint_inputs_and_outputs(finished):
    run = finished[1]
    record = json.loads((run / "second" / "DONE").read_text())
    assert set(record["fingerprints"]["inputs"]) == {"first/weights.pt"}
    (ckpt,) = record["fingerprints"]["outputs"]
    assert ckpt.startswith("second/checkpoints/") and record["fingerprints"]["outputs"][ckpt]["size"] > 0
    assert "first/weights.pt" in json.loads((run / "first" / "DONE").read_text())["fingerprints"]["outputs"]


def test_a_flipped_byte_in_a_checkpoint_is_refused_by_test_and_predict(finished, tmp_path):
    run = _copy(finished, tmp_path)
    ckpt = _best_ckpt(run, "second")
    _flip_middle_byte(ckpt)
    with pytest.raises(PipelineError, match=rf"{ckpt}: changed since stage 'second' wrote it \(same size"):
        main(["test", str(run), "--stage", "second"])
    with pytest.raises(PipelineError, match=rf"{ckpt}: changed since stage 'second' wrote it"):
        main(["predict", str(run), "--stage", "second"])
    assert not (run / "second" / "eval_direct").exists()


def test_a_replaced_input_is_refused_by_test_and_by_a_rerun(finished, tmp_path):
    run = _copy(finished, tmp_path)
    exp = finished[0]
    torch.save(torch.nn.Linear(4, 1).state_dict(), run / "first" / "weights.pt")  # same shapes, other weights
    with pytest.raises(PipelineError, match=r"first/weights\.pt: changed since stage 'second' read it"):
        main(["test", str(run), "--stage", "second"])
    with pytest.raises(PipelineError, match=r"first/weights\.pt: changed since stage 'first' wrote it"):
        main(["fit", "--config", str(exp), "--run_dir", str(run)])


def test_test_after_a_hand_off_was_deleted_names_it(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "first" / "weights.pt").unlink()
    with pytest.raises(PipelineError, match=r"first/weights\.pt: stage 'second' read it, but it no longer exists"):
        main(["test", str(run), "--stage", "second"])


def test_a_truncated_best_checkpoint_is_named(finished, tmp_path):
    run = _copy(finished, tmp_path)
    ckpt = _best_ckpt(run, "first")
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(PipelineError, match=rf"{ckpt}: changed since stage 'first' wrote it \(size \d+ -> 100"):
        main(["test", str(run), "--stage", "first"])
    done = run / "first" / "DONE"  # a record from before fingerprints: the archive itself is checked
    done.write_text(json.dumps({k: v for k, v in json.loads(done.read_text()).items() if k != "fingerprints"}))
    with pytest.raises(PipelineError, match=rf"{ckpt}: stage 'first''s best checkpoint is missing or cut short"):
        main(["test", str(run), "--stage", "first"])


def test_index_build_into_a_finished_stage_is_refused(finished):
    from gream_lit.data.catalog import DataError

    with pytest.raises(DataError, match=r"is a finished pipeline stage \(it holds DONE\)"):
        main(["index", "build", "--data", "nowhere", "--out", str(finished[1] / "first")])
    assert not list((finished[1] / "first").glob("*.index.json"))


def test_a_retest_writes_beside_the_fits_results(finished, tmp_path):
    run = _copy(finished, tmp_path)
    adopt_moved_run(run)  # the copy's records point at it first
    before = {p: p.read_bytes() for p in (run / "second").iterdir() if p.is_file()}
    assert main(["test", str(run), "--stage", "second"]) == 0
    assert {p: p.read_bytes() for p in before} == before
    assert (run / "second" / "eval_direct" / "test_metrics.json").is_file()


def test_a_foreign_checkpoint_is_not_resumed(finished, tmp_path):
    run = _copy(finished, tmp_path)
    other = tmp_path / "other"
    assert main(["fit", "--config", str(finished[0]), "--run_dir", str(other), "--stage", "first"]) == 0
    last = run / "first" / "checkpoints" / "last.ckpt"
    last.unlink()
    shutil.copy(other / "first" / "checkpoints" / "last.ckpt", last)  # the same shapes, another run
    (run / "second" / "DONE").unlink()
    (run / "first" / "DONE").unlink()
    shutil.rmtree(run / "second")
    with pytest.raises(PipelineError, match=rf"{last}: this checkpoint was not written by stage folder"):
        main(["fit", "--config", str(finished[0]), "--run_dir", str(run)])


def test_a_misspelt_stage_in_set_is_an_error_naming_it(finished):
    with pytest.raises(PipelineError, match=r"--set stages\.secnd\.model\.init_args\.lr: .* no stage 'secnd' "):
        load_experiment(finished[0], {"stages.secnd.model.init_args.lr": 1})
    with pytest.raises(PipelineError, match=r"did you mean 'second'"):
        main(["fit", "--config", str(finished[0]), "--stages.secnd.trainer.max_epochs", "2", "--print_config"])


SFT = "gream_lit.alignment.sft_module.SFTModule"
SRPO = "gream_lit.rl.srpo_module.SRPOModule"
CATALOG = "gream_lit.data.datamodule.CatalogDataModule"


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ({"class_path": SFT, "init_args": {"lora": {"rr": 8}}}, None, r"model\.lora: Option 'rr' is not accepted"),
        ({"class_path": SFT, "init_args": {"num_beams": 0}}, None, r"model\.num_beams: .*PositiveInt"),
        (
            {"class_path": SRPO, "init_args": {"rollout": {"tempreature": 1.0}}},
            None,
            r"model: Group 'rollout' does not accept option 'tempreature'",
        ),
        (None, {"class_path": CATALOG, "init_args": {"batch_size": 0}}, r"data\.batch_size: .*PositiveInt"),
        (None, None, r"trainer\.max_epoch: unknown key"),
    ],
)
def test_nested_keys_and_value_ranges_fail_before_any_stage_runs(tmp_path, model, data, message):
    exp = yaml.safe_load(tiny_experiment(tmp_path).read_text())
    second = exp["stages"]["second"]
    if model:
        second["model"] = model
    if data:
        second["data"] = data
    if not (model or data):
        second["trainer"] = {"max_epoch": 3}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(PipelineError, match=rf"bad\.yaml: stage 'second': {message}"):
        main(["fit", "--config", str(path), "--run_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    with pytest.raises(PipelineError, match=message):  # --print_config checks what it prints
        main(["fit", "--config", str(path), "--run_dir", str(tmp_path / "run"), "--print_config"])


def test_a_corrected_rerun_after_a_failed_stage_starts_it_over(tmp_path):
    exp = tiny_experiment(tmp_path, max_epochs=1)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="Invalid learning rate"):  # SGD refuses it when the stage starts
        main(["fit", "--config", str(exp), "--run_dir", str(run), "--set", "stages.second.model.init_args.lr=-1"])
    assert (run / "first" / "DONE").is_file() and not (run / "second" / "DONE").exists()
    assert main(["fit", "--config", str(exp), "--run_dir", str(run)]) == 0
    assert (run / "second" / "DONE").is_file()
    assert yaml.safe_load((run / "second.previous" / "config.yaml").read_text())["model"]["init_args"]["lr"] == -1


def test_evaluating_a_run_directory_refuses_set_and_seed(finished):
    run = finished[1]
    with pytest.raises(PipelineError, match=r"test evaluates the configs a run saved and does not apply --set"):
        main(["test", str(run), "--set", "stages.second.model.init_args.lr=1"])
    with pytest.raises(PipelineError, match=r"validate .* does not apply --seed"):
        main(["validate", str(run), "--seed", "4"])
    with pytest.raises(PipelineError, match=r"does not apply --set"):
        main(
            ["test", "--config", str(finished[0]), "--run_dir", str(run), "--set", "stages.first.trainer.max_epochs=3"]
        )


def test_one_line_errors_for_an_empty_config_a_folder_that_is_not_a_run_and_a_read_only_run(
    finished, tmp_path, capsys, monkeypatch
):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    for argv, message in (
        (["fit", "--config", str(empty)], f"error: {empty}: the file is empty"),
        (["test", str(tmp_path)], f"error: {tmp_path}: not a run directory (no experiment.yaml)"),
    ):
        monkeypatch.setattr(sys, "argv", ["gream_lit", *argv])
        assert entry() == 2
        assert capsys.readouterr().err.strip().startswith(message)

    def read_only(*args, **kwargs):  # what a read-only folder gives (root, who runs the tests, may write anyway)
        raise PermissionError(13, "Permission denied", str(finished[1] / "second" / "eval_direct"))

    monkeypatch.setattr(pipeline_cli, "evaluate_run", read_only)
    monkeypatch.setattr(sys, "argv", ["gream_lit", "test", str(finished[1])])
    assert entry() == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: {finished[1]}/second/eval_direct: permission denied (Permission denied); run on a writable copy"
    )


def test_report_names_a_stage_whose_metrics_are_missing_and_says_where_numbers_come_from(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "first" / "metrics.json").unlink()
    write_report([run], tmp_path / "report", patterns=["*/test/*"])
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"stage 'first' finished but {run}/first/metrics.json is missing; its rows are absent" in text
    assert "re-tests (`test <run>`) write to `<stage>/eval_*/`" in text


def test_print_config_refuses_an_unknown_stage(finished):
    with pytest.raises(PipelineError, match=r"--stage 'nope' is not in this experiment"):
        main(["fit", "--config", str(finished[0]), "--print_config", "--stage", "nope"])


def test_help_texts_say_what_each_command_does(capsys):
    for command, words in (("predict", "rank items"), ("fit", "--stages.STAGE.KEY VALUE")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert words in out and (command == "fit" or "run an experiment pipeline" not in out)
