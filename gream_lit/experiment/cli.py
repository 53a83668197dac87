"""One entry point: ``python -m gream_lit <command>``.

``fit``/``validate``/``test``/``predict`` go to LightningCLI (any LightningModule and DataModule by
``class_path``); the other commands (``data``, ``index``, ...) are small argparse programs that live
next to the code they drive and expose ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import logging
import sys

from gream_lit.data.catalog import DataError
from gream_lit.experiment.allocator import apply_configured_threshold, fix_mmap_threshold
from gream_lit.experiment.composition import PipelineError, composed_config_args
from gream_lit.experiment.console import quiet_third_party
from gream_lit.experiment.lightning_cli import GreamCLI
from gream_lit.experiment.pipeline_cli import maybe_run_pipeline

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("gream_lit.data.cli", "convert raw datasets to the catalog format, print statistics, download"),
    "index": ("gream_lit.indexing.cli", "embed item text, build and inspect semantic-ID indexes"),
    "sweep": ("gream_lit.experiment.sweep", "Optuna hyperparameter search over an experiment (TPE, pruning, SQLite)"),
    "report": (
        "gream_lit.experiment.report",
        "compare run directories: tables, learning curves, intervals, TensorBoard hparams",
    ),
    "teacher": (
        "gream_lit.curriculum.cli",
        "teacher-written data: chain-of-thought samples (cot), user side info (side-info)",
    ),
}


def _usage() -> str:
    lines = ["usage: python -m gream_lit <command> [options]", "", "commands:"]
    lines += [f"  {c:<9} LightningCLI {c} (--config experiments/<name>.yaml)" for c in LIGHTNING_COMMANDS]
    lines += [f"  {c:<9} {help}" for c, (_, help) in EXTRA_COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fix_mmap_threshold()
    quiet_third_party()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        code = maybe_run_pipeline(command, rest)
        if code is not None:
            return code
        args, settings = composed_config_args(rest)
        apply_configured_threshold(settings.get("mmap_threshold"))
        GreamCLI(
            args=[command, *args],
            save_config_kwargs={"overwrite": True},
        )
        return 0
    if command in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[command][0])
        return int(module.main(rest) or 0)
    print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


def entry() -> int:
    """``python -m gream_lit`` and the ``gream-lit`` script: ``main``, with the errors that already say
    what is wrong and where (a bad experiment file or run directory, bad data) printed as one line."""
    try:
        return main()
    except (PipelineError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:  # a read-only run folder or dataset: say which file, not a traceback
        print(f"error: {err.filename}: permission denied ({err.strerror}); run on a writable copy", file=sys.stderr)
        return 2
