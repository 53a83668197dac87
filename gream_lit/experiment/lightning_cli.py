"""``GreamCLI``: the LightningCLI behind ``fit``/``validate``/``test``/``predict``, for plain configs and for
each stage of a pipeline (``experiment.pipeline``)."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from gream_lit.experiment.per_user import PerUserResults
from gream_lit.experiment.resource_usage import ResourceUsage
from gream_lit.experiment.rng_state import RngState
from gream_lit.tables import print_metric_table


def explicit_model_keys(args: list[str]) -> list[str]:
    """Config keys of the ``--model.…`` flags on a command line, in ``model.init_args.…`` form."""
    keys = []
    for arg in args:
        if not arg.startswith("--model."):
            continue
        key = arg[2:].split("=", 1)[0].removesuffix("+")
        if not key.startswith(("model.init_args.", "model.class_path", "model.dict_kwargs.")):
            key = "model.init_args." + key.removeprefix("model.")
        keys.append(key)
    return keys


HEADLINE = "/test/ndcg@10"


def log_headline(trainer) -> float | None:
    """The test's NDCG@10 as TensorBoard's ``hp_metric`` (Lightning writes -1 there at the start), so the
    hparams tab shows each stage's headline metric; returns it (``None``: the test logged none)."""
    values = [float(v) for k, v in trainer.callback_metrics.items() if k.endswith(HEADLINE)]
    if not values:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_metrics({"hp_metric": values[0]}, step=trainer.global_step)
    return values[0]


class GreamCLI(LightningCLI):
    """LightningCLI that tests the best checkpoint after ``fit`` and prints every metric table.

    With ``--ckpt_path``, Lightning parses the checkpoint's hyperparameters over the whole config,
    which silently discards ``--model.…`` flags (e.g. a new decoding option for ``test``); here the
    checkpoint fills the model's arguments and the command line's model flags still win.
    Every test writes per-user results (``per_user.PerUserResults``) into ``per_user_dir``
    (``None``: the logger's folder), and every run its wall time and peak memory per phase
    (``resource_usage.ResourceUsage``) into the same folder. Checkpoints carry the random-number streams
    (``rng_state.RngState``), so a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, *args, per_user_dir: str | None = None, **kwargs) -> None:
        self._argv = list(kwargs.get("args") or sys.argv[1:])
        self.per_user_dir = per_user_dir
        super().__init__(*args, **kwargs)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(PerUserResults(self.per_user_dir))
        trainer.callbacks.append(ResourceUsage(self.per_user_dir))
        trainer.callbacks.append(RngState())
        return trainer

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].clone() if subcommand else None
        super()._parse_ckpt_path()
        if before is None:
            return
        for key in explicit_model_keys(self._argv):
            if key in before:
                self.config[subcommand][key] = before[key]

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        """``validate``/``test`` default to ``--verbose false``: our table (``after_test``) replaces
        Lightning's, so each metric prints once."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "verbose" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(verbose=False)
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="test the best checkpoint after fit")

    def after_fit(self) -> None:
        """One table: the last validation's metrics, then the test's (of the best checkpoint)."""
        validation = dict(self.trainer.callback_metrics)
        if not self.config.fit.get("test_after_fit", True) or self.trainer.fast_dev_run:
            print_metric_table(validation, title="fit: last validation")
            return
        ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        log_headline(self.trainer)
        title = f"fit: last validation, then test ({ckpt or 'last'} checkpoint)"
        print_metric_table({**validation, **(results[0] if results else {})}, title=title)

    def after_validate(self) -> None:
        print_metric_table(self.trainer.callback_metrics, title="validate")

    def after_test(self) -> None:
        log_headline(self.trainer)
        print_metric_table(self.trainer.callback_metrics, title="test")
