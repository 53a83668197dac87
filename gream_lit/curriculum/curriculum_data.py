"""Curriculum SFT data (docs/gream_spec.md §5.2, §5.3, §6): alignment samples + teacher CoT, mixed in curriculum order.

Reuses ``AlignmentDataModule``'s tokenisation, collation and evaluation sets. Both sample kinds are
encoded first (samples that cannot fit ``max_length`` are dropped), then ``curriculum.mix`` orders the
encoded rows in batches of ``batch_size``, so every training batch is all-alignment or all-reasoning as
in the official code. Training reads the stream in order (GREAM's ``disable_shuffling``) through
``SequentialDistributedSampler``, which keeps that order and batch purity under DDP too.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from torch.utils.data import DataLoader

from gream_lit.alignment.sft_data import AlignmentDataModule, encode_sample, shortest_encoding
from gream_lit.alignment.tasks import TaskContext, build_alignment_samples, load_side_info
from gream_lit.curriculum.cot import CotSample, build_cot_dataset, load_cot_samples
from gream_lit.curriculum.schedule import SCHEDULES, MixStats, mix
from gream_lit.curriculum.teachers import build_teacher
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.samplers import SequentialDistributedSampler
from gream_lit.data.text_format import REASONING_EVAL_TEMPLATE, REASONING_SYSTEM_PROMPT, SYSTEM_PROMPT, TaskSample

log = logging.getLogger(__name__)
EVAL_MODES = ("direct", "reasoning")


class CurriculumDataModule(AlignmentDataModule):
    """Alignment + reasoning SFT stream for the curriculum stage.

    Args:
        cot: ``False`` is the ablation without reasoning data (alignment only, same ordering code).
        cot_path: CoT samples to load: our jsonl (``python -m gream_lit teacher cot``) or the official
            GREAM ShareGPT parquet/json. Exclusive with ``teacher``.
        teacher: generate the CoT on the fly: ``{kind: template|hf|openai, cache: answers.jsonl,
            args: {...constructor kwargs}}``; the cache makes reruns free and resumable.
        cot_out: where generated CoT samples are written (jsonl + ``.stats.json``), for inspection.
        cot_max_samples: seeded subset of the CoT targets (``None`` = all, as GREAM).
        cot_rewrite: ``denoise`` (ours) or ``copy`` (official verbatim history rewrite).
        schedule: ``official`` | ``staged`` | ``none`` (see ``gream_lit.curriculum.schedule``).
        n_stages: stages of the ``staged`` schedule.
        reason_passes: copies of the CoT set in the ``none`` schedule (official: seen 3 times).
        eval_mode: ``direct`` (plain seq-rec prompt) or ``reasoning`` (reasoning system prompt + the
            reasoning template; the module then thinks before answering, docs/gream_spec.md §8.2).
        **kwargs: ``AlignmentDataModule`` arguments (index, backbone, tasks, passes, max_length, ...).
    """

    def __init__(
        self,
        index_path: str,
        cot: bool = True,
        cot_path: str | None = None,
        teacher: dict[str, Any] | None = None,
        cot_out: str | None = None,
        cot_max_samples: int | None = None,
        cot_rewrite: str = "denoise",
        schedule: str = "official",
        n_stages: int = 3,
        reason_passes: int = 3,
        eval_mode: str = "direct",
        **kwargs: Any,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown curriculum schedule {schedule!r}; expected one of {SCHEDULES}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"unknown eval_mode {eval_mode!r}; expected one of {EVAL_MODES}")
        if cot and (cot_path is None) == (teacher is None):
            raise ValueError("cot: true needs exactly one CoT source: cot_path (a file) or teacher (generate)")
        if eval_mode == "reasoning":
            kwargs["eval_system_prompt"] = REASONING_SYSTEM_PROMPT
        super().__init__(index_path=index_path, **kwargs)
        self.save_hyperparameters()
        self.cot = cot
        self.cot_path = cot_path
        self.teacher = dict(teacher) if teacher else None
        self.cot_out = cot_out
        self.cot_max_samples = cot_max_samples
        self.cot_rewrite = cot_rewrite
        self.schedule = schedule
        self.n_stages = n_stages
        self.reason_passes = reason_passes
        self.eval_mode = eval_mode
        self.mix_stats: MixStats | None = None
        self.counts: dict[str, int] = {}

    def _cot_samples(self) -> list[CotSample]:
        if self.cot_path is not None:
            samples = load_cot_samples(self.cot_path)
            log.info("loaded %d CoT samples from %s", len(samples), self.cot_path)
            return samples
        spec = dict(self.teacher)
        kind = spec.pop("kind", "template")
        cache = spec.pop("cache", None)
        args = spec.pop("args", None) or {}
        if spec:
            raise ValueError(f"teacher: unknown keys {sorted(spec)}; expected kind, cache, args")
        teacher = build_teacher(kind, self.catalog, cache, **args)
        samples, stats = build_cot_dataset(
            self.catalog,
            self.index,
            teacher,
            out=self.cot_out,
            max_samples=self.cot_max_samples,
            max_history=self.max_history,
            seed=self.seed,
            rewrite=self.cot_rewrite,
        )
        log.info("generated %d CoT samples with the %s teacher; dropped %s", len(samples), kind, stats.dropped)
        if not samples:
            raise ValueError(
                f"the {kind} teacher wrote no usable chain-of-thought sample (filtered: {stats.dropped}); "
                "check its answers in the cache, or set cot: false"
            )
        return samples

    def _encode(self, samples: list[TaskSample], system: str | None, kind: str) -> list[dict]:
        """Encoded rows tagged with their ``kind``; ``system=None`` keeps a CoT sample's own prompt.

        Alignment samples follow ``prompt_format``; chain-of-thought samples are text, so they keep
        the chat layout whatever the format."""
        rows = []
        if kind == "align":
            encoded = self.encode_train(samples)
        else:
            encoded = [encode_sample(self.tokenizer, s, system, self.max_length) for s in samples]
        for enc in encoded:
            if enc is not None:
                rows.append({**enc, "kind": kind})
        if len(rows) < len(samples):
            log.warning(
                "dropped %d of %d %s samples longer than max_length=%d",
                len(samples) - len(rows),
                len(samples),
                kind,
                self.max_length,
            )
        return rows

    def _build_stream(self) -> None:
        side = load_side_info(self.side_info_path, self.catalog) if self.side_info_path else {}
        ctx = TaskContext(self.catalog, self._sids(), self.split.train, side, self.max_history)
        align = self._encode(
            build_alignment_samples(ctx, self.task_specs, self.seed, self.passes), SYSTEM_PROMPT, "align"
        )
        if self.task_specs["seqdense"].enabled:
            align += [{**row, "kind": "align"} for row in self.dense_rows()]
        cot = self._cot_samples() if self.cot else []
        reason = self._encode(cot, None, "cot")
        if not align:
            raise ValueError(f"no alignment sample fits max_length={self.max_length}")
        if self.cot and not reason:
            shortest = min(shortest_encoding(self.tokenizer, s, None) for s in cot)
            raise ValueError(
                f"every CoT sample is longer than max_length={self.max_length} tokens, even with its prompt "
                f"cut to one history item (the shortest needs {shortest} tokens); raise max_length, "
                "or set cot: false"
            )
        self.train_data, self.mix_stats = mix(
            align, reason, self.schedule, self.batch_size, self.seed, self.n_stages, self.reason_passes
        )
        self.counts = {
            "align_samples": len(align),
            "cot_samples": len(reason),
            "stream_rows": len(self.train_data),
            "stream_cot_rows": sum(r["kind"] == "cot" for r in self.train_data),
            "reasoning_batches": self.mix_stats.reasoning_batches,
        }
        log.info("curriculum %s stream: %s; parts %s", self.schedule, self.counts, self.mix_stats.parts)

    def build_datasets(self, stage: str | None) -> None:
        self._prepare_vocab()
        if stage in (None, "fit") and self.train_data is None:
            self._build_stream()
        super().build_datasets(stage)

    def direct_prompt(self) -> DirectPrompt:
        """Direct-mode layout whatever ``eval_mode``: a reasoning-mode evaluation changes the system
        turn of the evaluation prompts, not how the model is prompted for an ID directly."""
        spec = super().direct_prompt()
        return replace(spec, system=SYSTEM_PROMPT) if spec.format == "chat" and self.eval_mode == "reasoning" else spec

    def eval_prompt_layout(self) -> DirectPrompt:
        """Reasoning mode: the reasoning template as a chat turn under the reasoning system prompt,
        whatever ``prompt_format`` (the model writes text before its answer)."""
        return super().eval_prompt_layout() if self.eval_mode == "direct" else self.reasoning_prompt()

    def reasoning_prompt(self) -> DirectPrompt:
        """The reasoning-mode prompt: the reasoning template as a chat turn under the reasoning system prompt."""
        return DirectPrompt("chat", self.max_length, self.max_history, REASONING_SYSTEM_PROMPT, REASONING_EVAL_TEMPLATE)

    def _collate_train(self, rows: list[dict]) -> dict:
        """Marks batches with chain-of-thought rows ``full_vocab``: their targets are text, so a module
        training over the ID tokens only (``logits_vocab: ids``) takes the whole vocabulary for them."""
        return {**super()._collate_train(rows), "full_vocab": any(r["kind"] == "cot" for r in rows)}

    def train_dataloader(self) -> DataLoader:
        """The stream in curriculum order: no shuffle, no length bucketing."""
        sampler = SequentialDistributedSampler(self.train_data, self.batch_size)
        return ResumableDataLoader(
            self.train_data,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self._collate_train,
            num_workers=self.num_workers,
        )
