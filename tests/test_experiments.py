"""Every file in ``experiments/`` parses and resolves, without training anything.

Pipeline experiments (top-level ``stages:``) resolve their includes and, stage by stage, every
``${...}`` reference against a run directory whose earlier stages are recorded as finished; each
resolved stage config, like each plain LightningCLI config, must pass LightningCLI's own parsing
(``--print_config``: class paths import, init arguments match the signatures). ``index build``
configs must hold only keys the command knows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from config_snapshot import finish_all

from gream_lit.experiment.composition import PipelineError, compose_file, composed_config_args, is_pipeline_file
from gream_lit.experiment.lightning_cli import GreamCLI
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import stage_config
from gream_lit.indexing.cli import _apply_config, _parser

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FILES = sorted(EXPERIMENTS.glob("*.yaml"))
ABLATIONS = {
    "ablation_no_align": "align",
    "ablation_no_rl": "rl",
}


def kind(path: Path) -> str:
    if is_pipeline_file(path):
        return "pipeline"
    content = compose_file(path)  # a LightningCLI config may get its model from an included piece
    return "lightning" if "model" in content else "index_build"


def print_config_exit_code(*config_paths: Path) -> int:
    """LightningCLI parses the files completely without instantiating anything (``--print_config``);
    0 when class paths import and every init argument matches its signature."""
    configs = [arg for path in config_paths for arg in ("--config", str(path))]
    args = ["fit", *composed_config_args(configs)[0], "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        GreamCLI(args=args)
    return exit_info.value.code or 0


def test_print_config_check_rejects_a_wrong_argument(tmp_path: Path) -> None:
    config = compose_file(EXPERIMENTS / "mostpop_scientific.yaml")
    config["data"]["init_args"]["no_such_argument"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert print_config_exit_code(path) != 0


def test_experiments_folder_has_the_gream_files() -> None:
    names = {p.stem for p in FILES}
    expected = {
        "quickstart",
        "gream_full",
        "ablation_no_align",
        "ablation_no_curriculum",
        "ablation_no_cot",
        "ablation_no_rl",
        "ablation_reward_exact",
        "ablation_adv_grpo",
        "ablation_rqvae",
    }
    assert expected <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_parses_and_resolves(path: Path, tmp_path: Path, capsys) -> None:
    file_kind = kind(path)
    if file_kind == "index_build":
        args = _apply_config(_parser(), ["build", "--config", str(path)])
        assert args.method and args.out
        return
    if file_kind == "lightning":
        assert print_config_exit_code(path) == 0
        return
    exp = load_experiment(path)
    assert exp["name"] == path.stem or "name" in yaml.safe_load(path.read_text())
    run = RunDir(tmp_path / "run")
    finish_all(exp, run)
    for stage in exp["stages"]:
        config = stage_config(exp, run, stage)
        assert "${" not in json.dumps(config), f"{path.name}: stage {stage} keeps an unresolved reference"
        config_path = tmp_path / f"{stage}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        assert print_config_exit_code(config_path) == 0, f"{path.name}: stage {stage} does not parse"
    capsys.readouterr()


def test_gream_stages_hand_off_through_the_previous_stage(tmp_path: Path) -> None:
    """Curriculum reads the aligned model and the index; dropping align hands it the base model."""
    full = load_experiment(EXPERIMENTS / "gream_full.yaml")
    assert list(full["stages"]) == ["index", "align", "curriculum", "rl"]
    run = RunDir(tmp_path / "full")
    finish_all(full, run)
    cur = stage_config(full, run, "curriculum")["data"]["init_args"]
    assert cur["backbone"] == str(run.stage_dir("align") / "hf" / "model")
    assert cur["index_path"] == str(run.stage_dir("index") / "Scientific.index.json")
    rl = stage_config(full, run, "rl")
    assert rl["model"]["init_args"]["backbone"] == str(run.stage_dir("curriculum") / "hf" / "model")
    assert rl["data"]["init_args"]["index_path"] == cur["index_path"]

    no_align = load_experiment(EXPERIMENTS / "ablation_no_align.yaml")
    run = RunDir(tmp_path / "no_align")
    finish_all(no_align, run)
    assert stage_config(no_align, run, "curriculum")["data"]["init_args"]["backbone"] == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    "name, stage, key, value",
    [
        ("ablation_no_curriculum", "curriculum", "data.init_args.schedule", "none"),
        ("ablation_no_cot", "curriculum", "data.init_args.cot", False),
        ("ablation_reward_exact", "rl", "model.init_args.reward", "exact"),
        ("ablation_adv_grpo", "rl", "model.init_args.advantage", "grpo"),
        ("ablation_rqvae", "index", "model.class_path", "gream_lit.indexing.rqvae.RQVAE"),
    ],
)
def test_ablation_changes_only_what_it_ablates(name: str, stage: str, key: str, value) -> None:
    full = load_experiment(EXPERIMENTS / "gream_full.yaml")
    ablation = load_experiment(EXPERIMENTS / f"{name}.yaml")
    node = ablation["stages"][stage]
    for part in key.split("."):
        node = node[part]
    assert node == value
    changed = [s for s in full["stages"] if full["stages"][s] != ablation["stages"][s]]
    assert changed == [stage]


@pytest.mark.parametrize("name, dropped", sorted(ABLATIONS.items()))
def test_ablation_drops_a_stage(name: str, dropped: str) -> None:
    full = load_experiment(EXPERIMENTS / "gream_full.yaml")
    ablation = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert list(ablation["stages"]) == [s for s in full["stages"] if s != dropped]


def test_cpu_ablation_without_curriculum_hands_the_alignment_model_to_srpo(tmp_path: Path) -> None:
    full = load_experiment(EXPERIMENTS / "gream_cpu_scientific.yaml")
    ablation = load_experiment(EXPERIMENTS / "ablation_cpu_no_curriculum.yaml")
    assert list(full["stages"]) == ["mostpop", "sasrec", "align", "curriculum", "rl"]
    assert ablation["name"] == "ablation_cpu_no_curriculum" and list(ablation["stages"]) == ["align", "rl"]
    assert all(ablation["stages"][s] == full["stages"][s] for s in ("align", "rl"))
    run = RunDir(tmp_path / "no_curriculum")
    finish_all(ablation, run)
    rl = stage_config(ablation, run, "rl")
    assert rl["model"]["init_args"]["backbone"] == str(run.stage_dir("align") / "hf" / "adapter")


@pytest.mark.parametrize(
    "name", ["gream_full", "quickstart", "gream_cpu_scientific", "ablation_no_align", "ablation_cpu_no_align"]
)
def test_one_override_switches_the_backbone_of_every_stage(name: str, tmp_path: Path) -> None:
    """``--set backbone=...`` reaches every stage that starts from a base LLM; later stages continue the
    earlier stage's model, with the new backbone as their fallback when that stage is dropped."""
    other = str(tmp_path / "other-llm")
    exp = load_experiment(EXPERIMENTS / f"{name}.yaml", {"backbone": other})
    text = json.dumps(exp["stages"])
    assert "smollm2" not in text.lower() and other in text


def test_a_backbone_reference_without_a_backbone_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("stages:\n  a:\n    model: {init_args: {backbone: '${backbone}'}}\n")
    with pytest.raises(
        PipelineError,
        match=r"x\.yaml: stages\.a\.model\.init_args\.backbone says \$\{backbone\}, but the file sets no top-level 'backbone'",
    ):
        load_experiment(path)


def _github_anchors(page: Path) -> set[str]:
    """GitHub's anchors for the ``#`` headings of a Markdown page: lowercase, punctuation dropped, spaces to
    hyphens (fenced code blocks skipped, so comments in them are not headings)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} +(.+)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_experiment_file_states_its_status_and_is_indexed() -> None:
    """Each file opens with ``# Status:``; a measured one names a docs page that exists (and, if it gives
    one, an anchor among that page's headings); experiments/README.md names every file."""
    docs = EXPERIMENTS.parent / "docs"
    index = (EXPERIMENTS / "README.md").read_text()
    problems = []
    for path in FILES:
        first = path.read_text().splitlines()[0]
        if not first.startswith("# Status: "):
            problems.append(f"{path.name}: first line is not '# Status: ...'")
            continue
        if first.startswith("# Status: measured"):
            m = re.search(r"docs/(\w+\.md)(?:#([\w-]+))?", first)
            if m is None or not (docs / m.group(1)).is_file():
                problems.append(f"{path.name}: a measured status must name an existing docs/<page>.md")
            elif m.group(2) and m.group(2) not in _github_anchors(docs / m.group(1)):
                problems.append(f"{path.name}: docs/{m.group(1)} has no heading #{m.group(2)}")
        if f"`{path.name}`" not in index:
            problems.append(f"{path.name}: not named in experiments/README.md")
    assert not problems, problems
