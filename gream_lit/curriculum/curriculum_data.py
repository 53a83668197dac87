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
from typing import Any, Literal, get_args

from torch.utils.data import DataLoader

from gream_lit.alignment.sft_data import AlignmentDataModule, encode_sample, shortest_encoding
from gream_lit.alignment.tasks import TaskContext, build_alignment_samples, load_side_info
from gream_lit.curriculum.cot import CotSample, build_cot_dataset, load_cot_samples
from gream_lit.curriculum.schedule import SCHEDULES, MixStats, Schedule, mix
from gream_lit.curriculum.teachers import build_teacher
from gream_lit.data import compact_format as compact
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.samplers import SequentialDistributedSampler
from gream_lit.data.short_thoughts import ThoughtSource, ThoughtWriter, short_row, think_block
from gream_lit.data.text_format import REASONING_EVAL_TEMPLATE, REASONING_SYSTEM_PROMPT, SYSTEM_PROMPT, TaskSample

log = logging.getLogger(__name__)
EvalMode = Literal["direct", "reasoning"]
CotLayout = Literal["official", "short"]
EVAL_MODES = get_args(EvalMode)
COT_LAYOUTS = get_args(CotLayout)


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
        cot_layout: ``official`` (a teacher's four-step CoT in the chat layout, as GREAM) or ``short``
            (ours: a one-line thought written from the visible history, ``curriculum.short_thoughts``, in
            the compact layout, ``History:<IDs><think>...</think><ID>``; needs ``prompt_format: compact``
            and no teacher). With ``short`` a reasoning-mode prompt is the direct-mode prompt followed by
            ``<think>``: the think tag is the mode tag, so direct mode is prompted as before.
        short_per_user: ``short`` rows per user, at its latest training positions.
        thought_source: which kinds thoughts name (``short_thoughts.TERM_SOURCES``).
        **kwargs: ``AlignmentDataModule`` arguments (index, backbone, tasks, passes, max_length, ...).

    Satisfies ``data.stage_data.ReasoningStageData``, what ``ReasoningSFTModule`` reads.
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
        schedule: Schedule = "official",
        n_stages: int = 3,
        reason_passes: int = 3,
        eval_mode: EvalMode = "direct",
        cot_layout: CotLayout = "official",
        short_per_user: int = 1,
        thought_source: ThoughtSource = "auto",
        **kwargs: Any,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown curriculum schedule {schedule!r}; expected one of {SCHEDULES}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"unknown eval_mode {eval_mode!r}; expected one of {EVAL_MODES}")
        if reason_passes != 3 and schedule != "none":
            raise ValueError(
                f"reason_passes: {reason_passes} applies to schedule: none only; schedule {schedule!r} fixes its "
                "own passes (official: each CoT sample 3 times)"
            )
        if n_stages != 3 and schedule != "staged":
            raise ValueError(f"n_stages: {n_stages} applies to schedule: staged only, not {schedule!r}")
        if cot_layout not in COT_LAYOUTS:
            raise ValueError(f"unknown cot_layout {cot_layout!r}; expected one of {COT_LAYOUTS}")
        if cot_layout == "short":
            if cot_path is not None or teacher is not None:
                raise ValueError("cot_layout: short writes its thoughts from the history: drop cot_path and teacher")
            if kwargs.get("prompt_format") != "compact":
                raise ValueError("cot_layout: short needs prompt_format: compact")
            if short_per_user < 1:
                raise ValueError(f"short_per_user must be >= 1, got {short_per_user}")
        elif cot and (cot_path is None) == (teacher is None):
            raise ValueError("cot: true needs exactly one CoT source: cot_path (a file) or teacher (generate)")
        if kwargs.get("max_tokens") is not None:
            raise ValueError("max_tokens: the curriculum trains an ordered stream in batches of batch_size rows")
        if eval_mode == "reasoning" and cot_layout == "official":
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
        self.cot_layout = cot_layout
        self.short_per_user = short_per_user
        self.thought_source = thought_source
        self._writer: ThoughtWriter | None = None
        self._eval_history: dict[int, tuple[int, ...]] = {}
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
        cot = self._cot_samples() if self.cot and self.cot_layout == "official" else []
        reason = self.short_rows() if self.cot and self.cot_layout == "short" else self._encode(cot, None, "cot")
        if not align:
            raise ValueError(f"no alignment sample fits max_length={self.max_length}")
        if self.cot and not reason and self.cot_layout == "short":
            raise ValueError("cot_layout: short wrote no thought: no training item has categories or title words")
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

    @property
    def thought_writer(self) -> ThoughtWriter:
        if self._writer is None:
            self._writer = ThoughtWriter.over_index(self.catalog, self.thought_source, self.index)
        return self._writer

    def _think_ids(self, history: tuple[int, ...]) -> list[int] | None:
        thought = self.thought_writer.thought(history)
        return self.tokenizer(think_block(thought), add_special_tokens=False)["input_ids"] if thought else None

    def short_rows(self) -> list[dict]:
        """``cot_layout: short``: each user's latest ``short_per_user`` training positions as compact rows
        with the think block before the answer; positions whose history has no kinds are left out."""
        by_user: dict[int, list] = {}
        for s in self.split.train:
            by_user.setdefault(s.user, []).append(s)
        prefix, rows, out = self._compact_prefix(), self.item_rows(), []
        for samples in by_user.values():
            for s in samples[-self.short_per_user :]:
                think = self._think_ids(s.history)
                if think is None:
                    continue
                prompt = compact.history_prompt(prefix, s.history, rows, self.max_length - len(think))
                out.append({**short_row(prompt, think, rows[s.target]), "kind": "cot"})
        return out

    def _encode_eval(self, samples: list) -> list[dict]:
        """Records each user's visible history, which a short thought must be grounded in."""
        self._eval_history.update({s.user: s.history[-self.max_history :] for s in samples})
        return super()._encode_eval(samples)

    def grounded(self, users: list[int], thoughts: list[str]) -> list[bool]:
        """Per evaluated user, whether its thought names only kinds of its visible history (and one at least)."""
        return [self.thought_writer.grounded(t, self._eval_history.get(u, ())) for u, t in zip(users, thoughts)]

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
        whatever ``prompt_format`` (the model writes text before its answer); the short layout's
        reasoning prompt is the direct one (decoding appends ``<think>``)."""
        return super().eval_prompt_layout() if self.eval_mode == "direct" else self.reasoning_prompt()

    def reasoning_prompt(self) -> DirectPrompt:
        """The reasoning-mode prompt: the reasoning template as a chat turn under the reasoning system
        prompt, or (``cot_layout: short``) the direct-mode prompt."""
        if self.cot_layout == "short":
            return super().direct_prompt()
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
