"""Config composition (``experiment.composition``): OmegaConf merging and load-time interpolation,
include pieces found under ``configs/``, a stage's own artifacts, and single-stage configs through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from config_snapshot import finish_all

from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import PipelineError, compose_file, composed_config_args, deep_merge
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import merged_stage, stage_config

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_keeps_references_as_written_and_replaces_lists() -> None:
    base = {"a": {"x": "${prev.artifacts.model|${backbone}}", "l": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"l": [3]}, "b": None})
    assert merged == {"a": {"x": "${prev.artifacts.model|${backbone}}", "l": [3]}, "b": None}


def test_load_time_interpolation_resolves_top_level_keys_and_env_and_keeps_run_time_references(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("GREAM_TEST_DIR", "/data/x")
    path = write(
        tmp_path / "e.yaml",
        "backbone: tiny\nstages:\n  a:\n    model:\n      init_args:\n"
        "        path: ${oc.env:GREAM_TEST_DIR}/items\n        llm: ${prev.artifacts.model|${backbone}}\n"
        "        out: ${stage_dir}/o.json\n        seed: ${seed_everything}\nseed_everything: 3\n",
    )
    args = load_experiment(path)["stages"]["a"]["model"]["init_args"]
    assert args == {
        "path": "/data/x/items",
        "llm": "${prev.artifacts.model|tiny}",
        "out": "${stage_dir}/o.json",
        "seed": 3,
    }


def test_an_unknown_interpolation_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", "stages:\n  a:\n    model: {init_args: {n: '${no_such_key}'}}\n")
    with pytest.raises(
        PipelineError,
        match=r"e\.yaml: stages\.a\.model\.init_args\.n says \$\{no_such_key\}, but the file sets no top-level 'no_such_key'$",
    ):
        load_experiment(path)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", "stages: {a: [\n")
    with pytest.raises(PipelineError, match=r"e\.yaml: not valid YAML"):
        load_experiment(path)


def test_includes_are_found_under_the_nearest_configs_folder(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "data" / "d.yaml", "include: base.yaml\ndata: {init_args: {index_path: i.json}}\n")
    write(tmp_path / "configs" / "data" / "base.yaml", "data: {init_args: {data_dir: /data, max_history: 5}}\n")
    path = write(tmp_path / "experiments" / "x.yaml", "include: data/d.yaml\ndata: {init_args: {max_history: 9}}\n")
    assert compose_file(path) == {
        "data": {"init_args": {"data_dir": "/data", "index_path": "i.json", "max_history": 9}}
    }
    deep = write(tmp_path / "experiments" / "deep.yaml", "data: {init_args: {include: data/d.yaml}}\n")
    with pytest.raises(PipelineError, match=r"deep.yaml: include at data.init_args: a file includes at its top level"):
        compose_file(deep)
    stage = write(tmp_path / "experiments" / "p.yaml", "stages:\n  s: {model: m.M, trainer: {include: data/d.yaml}}\n")
    with pytest.raises(PipelineError, match=r"p.yaml: include at stages.s.trainer"):
        compose_file(stage)
    missing = write(tmp_path / "experiments" / "y.yaml", "include: data/nope.yaml\n")
    with pytest.raises(PipelineError, match=r"include 'data/nope.yaml' \(in .*experiments\): no such file"):
        compose_file(missing)


def test_a_stage_names_its_own_artifact_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.yaml",
        "stages:\n  idx:\n    model: {init_args: {output_path: '${artifacts.index}'}}\n"
        "    artifacts: {index: out/x.index.json}\n",
    )
    exp = load_experiment(path)
    run = RunDir(tmp_path / "run")
    out = stage_config(exp, run, "idx")["model"]["init_args"]["output_path"]
    assert out == str(run.stage_dir("idx") / "out" / "x.index.json")

    bad = write(
        tmp_path / "bad.yaml",
        "stages:\n  idx:\n    model: {init_args: {output_path: '${artifacts.indx}'}}\n    artifacts: {index: x.json}\n",
    )
    with pytest.raises(PipelineError, match=r"declares no artifact 'indx' \(declared: index\)"):
        load_experiment(bad)


def test_a_single_stage_config_with_includes_goes_to_lightning_cli_composed(tmp_path: Path, capsys) -> None:
    path = write(
        tmp_path / "x.yaml",
        f"include: {REPO / 'experiments' / 'mostpop_scientific.yaml'}\n"
        "trainer: {max_epochs: 3}\ndata: {init_args: {max_history: '${seed_everything}'}}\n",
    )
    args, settings = composed_config_args(["--config", str(path), "--trainer.max_epochs", "4"])
    assert settings == {}
    assert yaml.safe_load(args[1])["data"]["init_args"]["max_history"] == 42 and args[2:] == [
        "--trainer.max_epochs",
        "4",
    ]
    plain = str(write(tmp_path / "plain.yaml", "trainer: {max_epochs: 1}\n"))
    assert composed_config_args([f"--config={plain}"]) == (["--config", plain], {})
    tuned = str(write(tmp_path / "tuned.yaml", "mmap_threshold: 262144\ntrainer: {max_epochs: 1}\n"))
    args, settings = composed_config_args(["--config", tuned])
    assert settings == {"mmap_threshold": 262144} and yaml.safe_load(args[1]) == {"trainer": {"max_epochs": 1}}
    malformed = str(write(tmp_path / "malformed.yaml", "mmap_threshold: 4MB\n"))
    with pytest.raises(PipelineError, match=r"malformed.yaml: mmap_threshold: expected a byte count, got '4MB'"):
        composed_config_args(["--config", malformed])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_epochs"] == 3 and printed["data"]["init_args"]["max_history"] == 42
    assert json.dumps(printed).count("amazon18_scientific") == 1


def test_a_single_stage_config_sets_the_mmap_threshold_for_its_run(tmp_path, monkeypatch, capsys) -> None:
    import gream_lit.experiment.cli as cli

    applied = []
    monkeypatch.setattr(cli, "apply_configured_threshold", applied.append)
    config = write(
        tmp_path / "tuned.yaml",
        f"include: {REPO / 'experiments' / 'mostpop_scientific.yaml'}\nmmap_threshold: 262144\n",
    )
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    assert applied == [262144] and "mmap_threshold" not in capsys.readouterr().out


def test_stage_name_names_each_stage_that_includes_a_piece(tmp_path: Path) -> None:
    """``${stage_name}`` is a run-time reference: it passes through loading as written and resolves to the
    name of each stage that includes the piece."""
    write(
        tmp_path / "configs" / "stages" / "sft.yaml",
        "model: {init_args: {stage: '${stage_name}'}}\n"
        "trainer: {callbacks: [{class_path: M, init_args: {monitor: '${stage_name}/val/ndcg@10'}}]}\n",
    )
    path = write(
        tmp_path / "experiments" / "e.yaml",
        "stages:\n  align: {include: stages/sft.yaml}\n  curriculum: {include: stages/sft.yaml}\n",
    )
    exp = load_experiment(path)
    assert exp["stages"]["align"]["model"]["init_args"]["stage"] == "${stage_name}"
    run = RunDir(tmp_path / "run")
    for stage in ("align", "curriculum"):
        config = stage_config(exp, run, stage)
        assert config["model"]["init_args"]["stage"] == stage
        assert config["trainer"]["callbacks"][0]["init_args"]["monitor"] == f"{stage}/val/ndcg@10"


def test_gream_full_stages_are_named_by_the_shared_sft_piece(tmp_path: Path) -> None:
    exp = load_experiment(REPO / "experiments" / "gream_full.yaml")
    run = RunDir(tmp_path / "run")
    finish_all(exp, run)  # every stage recorded as finished, so the references to earlier stages resolve
    for stage in ("align", "curriculum"):
        config = stage_config(exp, run, stage)
        assert config["model"]["init_args"]["stage"] == stage
        (checkpoint,) = [cb for cb in config["trainer"]["callbacks"] if "ModelCheckpoint" in cb["class_path"]]
        assert checkpoint["init_args"]["monitor"] == f"{stage}/val/ndcg@10"


def test_a_stage_reference_in_a_single_stage_config_names_the_file_and_key(tmp_path: Path) -> None:
    """A single-stage config has no stage or run directory: ``${stage_name}``, ``${stage_dir}`` or
    ``${prev.…}`` in it (here through an included piece) fails at load time instead of reaching
    LightningCLI as literal text."""
    write(
        tmp_path / "configs" / "piece.yaml", "trainer: {callbacks: [{init_args: {monitor: '${stage_name}/val/x'}}]}\n"
    )
    single = write(tmp_path / "experiments" / "single.yaml", "include: piece.yaml\nmodel: m.M\n")
    with pytest.raises(
        PipelineError,
        match=r"single\.yaml: trainer\.callbacks\[0\]\.init_args\.monitor: \$\{stage_name\} is a pipeline stage's reference",
    ):
        composed_config_args(["--config", str(single)])
    out = write(tmp_path / "out.yaml", "model: {init_args: {export_dir: '${stage_dir}/hf'}}\n")
    with pytest.raises(PipelineError, match=r"out\.yaml: model\.init_args\.export_dir: \$\{stage_dir\} is a pipeline"):
        main(["fit", "--config", str(out)])
    escaped = write(tmp_path / "escaped.yaml", "model: {init_args: {note: '\\${stage_name}'}}\n")
    args, _ = composed_config_args(["--config", str(escaped)])
    assert yaml.safe_load(args[1])["model"]["init_args"]["note"] == "${stage_name}"


def test_a_misspelt_stage_name_reference_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", "stages:\n  a:\n    model: {init_args: {stage: '${stage_nam}'}}\n")
    with pytest.raises(PipelineError, match=r"e\.yaml: stages\.a\.model\.init_args\.stage says \$\{stage_nam\}"):
        load_experiment(path)


def test_hardware_is_one_file_for_every_stage_and_trainer_replaces_it(tmp_path: Path, capsys) -> None:
    """``hardware: trainer/cpu.yaml`` merges configs/trainer/cpu.yaml over every stage's trainer; ``--trainer``
    names another file for the whole pipeline, over what the stages set themselves."""
    quickstart = REPO / "experiments" / "quickstart.yaml"
    own = load_experiment(quickstart)
    assert own["hardware"] == "trainer/cpu.yaml"
    assert all(s["trainer"]["accelerator"] == "cpu" and s["trainer"]["devices"] == 1 for s in own["stages"].values())
    ddp = load_experiment(quickstart, hardware=str(REPO / "configs" / "trainer" / "ddp.yaml"))
    for name, stage in ddp["stages"].items():
        assert stage["trainer"]["strategy"] == "ddp" and stage["trainer"]["accelerator"] == "gpu", name
        assert stage["trainer"]["precision"] == "bf16-mixed", name
    assert ddp["stages"]["rl"]["trainer"]["val_check_interval"] == own["stages"]["rl"]["trainer"]["val_check_interval"]
    gpu_index = load_experiment(quickstart, {"stages.index.trainer.accelerator": "gpu"})
    assert gpu_index["stages"]["index"]["trainer"]["accelerator"] == "gpu"  # a stage's own key over hardware:
    assert gpu_index["stages"]["align"]["trainer"]["accelerator"] == "cpu"

    argv = ["fit", "--config", str(quickstart), "--run_dir", str(tmp_path / "run"), "--print_config"]
    assert main([*argv, "--trainer", "trainer/deepspeed.yaml", "--stage", "align"]) == 0
    assert yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])["trainer"]["strategy"].endswith(
        "DeepSpeedStrategy"
    )

    nested = tmp_path / "nested.yaml"
    nested.write_text("trainer: {accelerator: cpu}\n")
    with pytest.raises(PipelineError, match=r"nested.yaml: a hardware file is a mapping of Trainer arguments"):
        load_experiment(quickstart, hardware=str(nested))
    with pytest.raises(PipelineError, match="include 'trainer/tpu.yaml'"):
        load_experiment(quickstart, hardware="trainer/tpu.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("acelerator: cpu\n")
    with pytest.raises(PipelineError, match="acelerator"):
        load_experiment(quickstart, hardware=str(typo))


def test_dataset_is_one_file_under_every_stage_and_one_override_moves_the_recipe(tmp_path: Path) -> None:
    """``dataset: data/ml100k.yaml`` reaches every stage's data; ``--set dataset=...`` swaps it for all of them,
    while ``defaults`` and a stage's own data keys win over it."""
    recipe = REPO / "experiments" / "gream_cpu.yaml"
    own = load_experiment(recipe)
    for name in own["stages"]:
        assert merged_stage(own, name)["data"]["init_args"]["format"] == "movielens_widedeep", name
    scientific = load_experiment(recipe, {"dataset": "data/scientific.yaml"})
    for name in scientific["stages"]:
        args = merged_stage(scientific, name)["data"]["init_args"]
        assert args["data_dir"] == "../shared/data/amazon18_scientific" and "format" not in args, name
    pinned = load_experiment(recipe, {"dataset": "data/games.yaml", "stages.sasrec.data.init_args.data_dir": "x"})
    assert merged_stage(pinned, "sasrec")["data"]["init_args"]["data_dir"] == "x"
    assert merged_stage(pinned, "align")["data"]["init_args"]["data_dir"] == "../shared/data/amazon18_games"
    own_data = load_experiment(
        recipe, {"defaults.data.init_args.format": "lcrec", "defaults.data.init_args.data_dir": "d"}
    )
    index_data = merged_stage(own_data, "index")["data"]["init_args"]
    assert (index_data["format"], index_data["data_dir"], index_data["collaborative_weight"]) == ("lcrec", "d", 0.25)

    wrong = write(tmp_path / "wrong.yaml", "trainer: {max_epochs: 1}\n")
    with pytest.raises(PipelineError, match=r"wrong.yaml: a dataset file holds one 'data' mapping"):
        load_experiment(recipe, {"dataset": str(wrong)})
    with pytest.raises(PipelineError, match="include 'data/nope.yaml'"):
        load_experiment(recipe, {"dataset": "data/nope.yaml"})
