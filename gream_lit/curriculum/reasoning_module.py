"""The curriculum stage's module: ``SFTModule`` whose next-item evaluation can run in reasoning mode.

Reasoning decoding itself (``reason_then_rank``, ``sample_and_rank``) lives in ``inference.reasoning``;
this module decides when to use it and logs the share of outputs that parse and a few chains to
TensorBoard.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MeanMetric

from gream_lit.alignment.sft_module import SFTModule
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.stage_data import ReasoningStageData
from gream_lit.data.text_format import PARSE_FAILURES
from gream_lit.inference.exclusion import drop_seen
from gream_lit.inference.reasoning import (
    ReasoningOptions,
    ReasoningResult,
    reason_then_rank,
    sample_and_rank,
    sid_lookup,
)


class ReasoningSFTModule(SFTModule):
    """``SFTModule`` that evaluates next-item recommendation in reasoning mode.

    Reasoning mode is on when the data module's ``eval_mode`` is ``reasoning`` (its prompts then carry
    the reasoning system prompt); other evaluation sets (e.g. ``item2index``) stay direct. Logs
    ``<stage>/<split>/{recall,ndcg,mrr}@k``, ``.../parse_rate`` (outputs that parse),
    ``.../answer_rate`` (outputs that opened ``<answer>`` unforced; in the short layout, that closed their
    think block themselves), ``.../parse_fail/<cause>`` (share of outputs failing for each of
    ``PARSE_FAILURES``), ``.../distinct_top1`` (distinct first answers over users), ``.../users_per_s``,
    in the short layout ``.../grounded_rate`` (thoughts naming only kinds of the user's history) and
    ``log_examples`` chains per evaluation as TensorBoard text.

    Args:
        reasoning: ``ReasoningOptions`` (decoder, budgets, sampling).
        log_examples: reasoning chains written to TensorBoard per evaluation (0 = none).
        **kwargs: ``SFTModule`` arguments.
    """

    def __init__(self, reasoning: ReasoningOptions | None = None, log_examples: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if isinstance(reasoning, dict):
            reasoning = ReasoningOptions(**reasoning)
        self.reasoning = reasoning or ReasoningOptions()
        self.parse_rates = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.answer_rates = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.failure_rates = torch.nn.ModuleDict(
            {f"{s}_{cause}": MeanMetric() for s in ("val", "test") for cause in PARSE_FAILURES}
        )
        self.grounded_rates = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self._lookup: dict[str, int] | None = None
        self._top1: dict[str, list[int]] = {"val": [], "test": []}
        self._seconds: dict[str, float] = {"val": 0.0, "test": 0.0}

    def _reasoning_on(self, dataloader_idx: int) -> bool:
        return dataloader_idx == 0 and self.stage_data().eval_mode == "reasoning"

    def reason(self, batch: dict[str, torch.Tensor]) -> ReasoningResult:
        opts, dm = self.reasoning, self.stage_data(ReasoningStageData)
        layout = dm.cot_layout
        if layout != opts.layout:
            raise ValueError(
                f"{self.log_prefix}: the data module's cot_layout is {layout!r} but reasoning.layout is "
                f"{opts.layout!r}; set model.init_args.reasoning.layout: {layout}"
            )
        if opts.decoder == "sample_rank":
            if self._lookup is None:
                self._lookup = sid_lookup(dm.index)
            result = sample_and_rank(
                self.model, self.tokenizer, batch["input_ids"], batch["attention_mask"], dm.index, opts, self._lookup
            )
            return replace(result, items=drop_seen(result.items, batch.get("seen")))
        if self.tables.tokens[0].device != self.device:
            self.tables = self.tables.to(self.device)
        return reason_then_rank(
            self.model,
            self.tokenizer,
            batch["input_ids"],
            batch["attention_mask"],
            self.tables,
            opts,
            batch.get("seen"),
        )

    def _eval_step(self, split: str, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int) -> dict:
        if not self._reasoning_on(dataloader_idx):
            return self._direct_step(split, batch, dataloader_idx, batch_idx)
        start = time.perf_counter()
        result = self.reason(batch)
        self._seconds[split] += time.perf_counter() - start
        self._top1[split] += result.items[:, 0].tolist()
        if self.reasoning.layout == "short":
            grounded = self.stage_data(ReasoningStageData).grounded(batch["user"].tolist(), result.texts)
            self.grounded_rates[split].update(torch.tensor(grounded, dtype=torch.float, device=self.device))
        self._metrics(split, 0).update(result.items, batch["target"])
        self.parse_rates[split].update(result.parsed.float().to(self.device))
        self.answer_rates[split].update(result.answered.float().to(self.device))
        for k, cause in enumerate(PARSE_FAILURES):
            self.failure_rates[f"{split}_{cause}"].update(result.failures[:, k].to(self.device))
        if batch_idx == 0:
            self._log_chains(split, result.texts[: self.hparams.log_examples])
        return {"user": batch.get("user"), "target": batch["target"], "items": result.items}

    def _log_chains(self, split: str, texts: list[str]) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero:
                for k, text in enumerate(texts):
                    # markdown would eat the <think>/<answer> tags; a code block shows them verbatim
                    logger.experiment.add_text(
                        f"{self.log_prefix}/{split}/reasoning_{k}", f"```\n{text}\n```", self.global_step
                    )

    def _log_rates(self, split: str) -> None:
        rates = [("parse_rate", self.parse_rates[split]), ("answer_rate", self.answer_rates[split])]
        rates += [(f"parse_fail/{c}", self.failure_rates[f"{split}_{c}"]) for c in PARSE_FAILURES]
        rates.append(("grounded_rate", self.grounded_rates[split]))
        for name, metric in rates:
            if metric.update_count:
                self.log(f"{self.log_prefix}/{split}/{name}", metric.compute())
                metric.reset()
        top1, seconds = self._top1[split], self._seconds[split]
        if top1:
            self.log(f"{self.log_prefix}/{split}/distinct_top1", len(set(top1)) / len(top1))
            self.log(f"{self.log_prefix}/{split}/users_per_s", len(top1) / max(seconds, 1e-9))
        self._top1[split], self._seconds[split] = [], 0.0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("val", batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_rates("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("test", batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_rates("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Reasoning mode adds, per user, the text the model wrote (``PredictionWriter``: ``reasoning``)."""
        if not self._reasoning_on(dataloader_idx):
            return super().predict_step(batch, batch_idx, dataloader_idx)
        result = self.reason(batch)
        return {"user": batch["user"], "items": result.items, "texts": result.texts}

    def bundle_reasoning(self) -> tuple[ReasoningOptions, DirectPrompt] | None:
        prompt = self.stage_data().reasoning_prompt()
        return None if prompt is None else (self.reasoning, prompt)
