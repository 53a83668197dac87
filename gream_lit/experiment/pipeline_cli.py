"""``fit``/``validate``/``test``/``predict`` on an experiment file or a run directory (``pipeline``).

python -m gream_lit fit --config experiments/x.yaml [--stage S] [--seed N] [--stages.S.trainer.max_epochs 2]
python -m gream_lit test runs/x [--stage S]     # re-test each finished stage's best checkpoint
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_only

from gream_lit.experiment.composition import PipelineError, is_pipeline_file
from gream_lit.experiment.evaluate import RANKING_MODES, eval_dir, evaluate_run, predict_run
from gream_lit.experiment.per_user import FILE_NAME as PER_USER_FILE
from gream_lit.experiment.per_user import read_per_user
from gream_lit.experiment.pipeline import run_experiment
from gream_lit.experiment.preflight import load_experiment
from gream_lit.experiment.run_directory import RunDir
from gream_lit.experiment.stage_configs import merged_stage, stage_config
from gream_lit.tables import format_stage_table


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineError(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


DESCRIPTIONS = {
    "fit": "run an experiment's stages in order in one run directory (finished stages are skipped)",
    "validate": "validate each finished stage's best checkpoint of a run directory",
    "test": "re-test each finished stage's best checkpoint of a run directory (results go to <stage>/eval_*/)",
    "predict": "rank items for each test user with each finished stage's best checkpoint of a run directory",
}
OVERRIDES_HELP = """overrides of an experiment file (fit, --print_config):
  --stages.STAGE.KEY VALUE   e.g. --stages.align.trainer.max_epochs 2 (same as --set stages.align.trainer.max_epochs=2);
                             STAGE must be a stage of the experiment, KEY is checked before any stage runs
  --defaults.KEY VALUE       a key merged under every stage, e.g. --defaults.trainer.accelerator cpu
  --backbone VALUE           the experiment's top-level backbone
"""


def _parser(command: str, add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m gream_lit {command}",
        description=DESCRIPTIONS.get(command, "run an experiment pipeline"),
        epilog=OVERRIDES_HELP if command == "fit" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        add_help=add_help,
    )
    p.add_argument("target", nargs="?", help="a finished run directory (validate/test/predict)")
    p.add_argument("-c", "--config", help="experiment file (top-level 'stages:')")
    p.add_argument("--stage", help="run only this stage")
    p.add_argument("--runs_root", default="runs", help="run directories go to <runs_root>/<name>")
    p.add_argument("--run_dir", help="explicit run directory")
    p.add_argument("--seed", type=int, help="seed for every stage; the run directory gets a _seed<N> suffix")
    p.add_argument(
        "--trainer",
        metavar="FILE",
        help="hardware for every stage: a configs/trainer/ file (e.g. configs/trainer/ddp.yaml) merged over each "
        "stage's trainer, in place of the experiment's own 'hardware:'",
    )
    p.add_argument(
        "--print_config",
        action="store_true",
        help="print every stage's config (includes, defaults and --set merged) and exit",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. stages.sasrec.trainer.max_epochs=2"
    )
    if command in ("predict", "test", "validate"):
        p.add_argument(
            "--mode", default="direct", choices=RANKING_MODES, help="reasoning: think, then answer (curriculum stages)"
        )
        p.add_argument(
            "--exclude_seen",
            action="store_true",
            help="never rank an item the user already had (their whole earlier sequence); results go beside "
            "the stage's own, which ranked the full catalogue (docs/evaluation.md)",
        )
    if command in ("test", "validate"):
        p.add_argument(
            "--max_eval_users",
            type=int,
            help="a fixed random sample of this many users (with --mode reasoning: the slow mode on a CPU)",
        )
    return p


def format_stage_configs(exp: Mapping[str, Any], run: RunDir, only: str | None = None) -> str:
    """Every stage's config as its LightningCLI job will get it: resolved where its references can be
    (earlier stages finished), else with ``${...}`` as written."""
    parts = []
    for stage in exp["stages"]:
        if only is not None and stage != only:
            continue
        try:
            config, note = stage_config(exp, run, stage), f"resolved in {run.root}"
        except PipelineError as err:
            config = merged_stage(exp, stage)
            note = f"references unresolved until earlier stages finish ({err})"
        parts.append(f"# stage {stage}: {note}\n{yaml.safe_dump(config, sort_keys=False)}")
    return "\n".join(parts)


def default_run_dir(exp: Mapping[str, Any], runs_root: str | Path, seed: int | None) -> Path:
    suffix = f"_seed{seed}" if seed is not None else ""
    return Path(runs_root) / f"{exp['name']}{suffix}"


def _is_dotted(arg: str) -> bool:
    return arg.startswith(("--stages.", "--defaults.")) or arg.partition("=")[0] == "--backbone"


def dotted_to_set(argv: Sequence[str]) -> list[str]:
    """LightningCLI-style ``--stages.sasrec.trainer.max_epochs 2`` (or ``=2``, and ``--defaults.…``,
    ``--backbone``) as ``--set KEY=VALUE``."""
    out, args, i = [], list(argv), 0
    while i < len(args):
        arg = args[i]
        if not _is_dotted(arg):
            out.append(arg)
        else:
            key, sep, value = arg[2:].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    raise PipelineError(f"{arg} needs a value")
                i += 1
                value = args[i]
            out += ["--set", f"{key}={value}"]
        i += 1
    return out


def maybe_run_pipeline(command: str, argv: Sequence[str]) -> int | None:
    """Handle ``fit``/``validate``/``test`` on an experiment file or run directory; None otherwise.

    ``cli.main`` calls this first, so a plain LightningCLI config still goes to LightningCLI.
    """
    argv = dotted_to_set(argv)
    known, _ = _parser(command, add_help=False).parse_known_args(argv)
    is_run_dir = bool(known.target) and (Path(known.target) / "experiment.yaml").is_file()
    if known.target and not is_run_dir and not known.config and Path(known.target).is_dir():
        raise PipelineError(
            f"{known.target}: not a run directory (no experiment.yaml); give a folder that fit wrote, "
            "or an experiment file with --config"
        )
    if not is_run_dir and not (known.config and is_pipeline_file(known.config)):
        if any(arg in ("-h", "--help") for arg in argv):  # LightningCLI's help follows for single configs
            rank_zero_only(print)(
                _parser(command).format_help().replace("usage:", "usage (experiment file or run directory):", 1)
                + "\nusage (a single-stage LightningCLI config):",
                flush=True,
            )
        return None
    args = _parser(command).parse_args(list(argv))
    if command != "fit" and (args.set or args.trainer or (is_run_dir and args.seed is not None)):
        flag = "--set" if args.set else "--trainer" if args.trainer else "--seed"
        raise PipelineError(
            f"{command} evaluates the configs a run saved and does not apply {flag}; fit a new run with it "
            "(another --run_dir), or drop it"
        )
    if is_run_dir:
        run = RunDir(args.target)
        if command == "predict":
            for stage, path in predict_run(run, args.stage, args.mode, args.exclude_seen).items():
                rank_zero_only(print)(f"predict: stage {stage}: {sum(1 for _ in path.open())} users -> {path}")
            return 0
        if command not in ("validate", "test"):
            raise PipelineError(f"'{command}' on a run directory is not supported; use validate, test or predict")
        results = evaluate_run(command, run, args.stage, args.mode, args.max_eval_users, args.exclude_seen)
    else:
        exp = load_experiment(args.config, _parse_set(args.set), args.seed, args.trainer)
        run = RunDir(Path(args.run_dir) if args.run_dir else default_run_dir(exp, args.runs_root, args.seed))
        if args.print_config:
            if args.stage is not None and args.stage not in exp["stages"]:
                raise PipelineError(f"--stage {args.stage!r} is not in this experiment; stages: {list(exp['stages'])}")
            print(format_stage_configs(exp, run, args.stage))
            return 0
        if command == "fit":
            results = run_experiment(exp, run.root, args.stage)
        elif command in ("validate", "test"):
            results = evaluate_run(command, run, args.stage, args.mode, args.max_eval_users, args.exclude_seen)
        else:
            raise PipelineError(f"'{command}' is not supported on an experiment file; use fit, validate or test")
    if command != "validate" and results:  # each stage printed its own table as it ran
        mode, cap = getattr(args, "mode", "direct"), getattr(args, "max_eval_users", None)
        seen = getattr(args, "exclude_seen", False)
        folders = {
            stage: run.stage_dir(stage) if command == "fit" else eval_dir(run.stage_dir(stage), mode, cap, seen)
            for stage in results
        }
        rows = [(stage, metrics, _tested_users(folders[stage])) for stage, metrics in results.items()]
        rank_zero_only(print)(
            f"\n{command}: {run.root}, stages in pipeline order\n{format_stage_table(rows)}", flush=True
        )
    return 0


def _tested_users(stage_dir: Path) -> int | None:
    """Users in the stage's per-user test file (``None`` without one)."""
    path = stage_dir / PER_USER_FILE
    return len(read_per_user(path)) if path.is_file() else None
