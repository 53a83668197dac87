"""Alignment SFT data: task samples -> chat-templated token ids with assistant-only labels.

The module reading these batches (``SFTModule``) is data-agnostic; it relies on this protocol:
``tokenizer`` (with the ID tokens), ``index`` (SemanticIndex), ``backbone`` (model the tokenizer came
from), ``item_texts()`` (one text per item, for embedding init); train batches hold ``input_ids``,
``attention_mask``, ``labels``; validation/test batches hold left-padded prompt ``input_ids``,
``attention_mask`` and the ``target`` item.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from gream_lit.alignment.tasks import TaskContext, build_alignment_samples, load_side_info, parse_task_specs
from gream_lit.alignment.tasks.builders import clean_title
from gream_lit.data import compact_format as compact
from gream_lit.data.datamodule import CatalogDataModule
from gream_lit.data.direct_prompt import PROMPT_FORMATS, DirectPrompt, fit_prompt, prompt_ids
from gream_lit.data.padding import pad
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.samplers import BatchedRows, BatchesDistributedSampler
from gream_lit.data.semantic_index import SemanticIndex, check_handoff_index
from gream_lit.data.split import Sample, train_sequences
from gream_lit.data.templates import ITEM2INDEX
from gream_lit.data.text_format import SYSTEM_PROMPT, TaskSample
from gream_lit.modeling.backbone import DEFAULT_BACKBONE, load_tokenizer
from gream_lit.modeling.vocab import add_index_tokens, require_index_tokens

log = logging.getLogger(__name__)
IGNORE = -100


def answer_text(tokenizer, response: str) -> str:
    """What the chat template writes after the generation prompt for ``response``, up to and
    including the end-of-turn token (the text the loss is on, docs/gream_spec.md §5.4)."""
    user = [{"role": "user", "content": "x"}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"{tokenizer.name_or_path}: chat template does not extend the generation prompt")
    suffix = full[len(prompt) :]
    end = suffix.rfind(tokenizer.eos_token)
    if end < 0:
        raise ValueError(
            f"{tokenizer.name_or_path}: chat template does not end the answer with {tokenizer.eos_token!r}"
        )
    return suffix[: end + len(tokenizer.eos_token)]


def encode_sample(tokenizer, sample: TaskSample, system: str | None, max_length: int) -> dict | None:
    """``input_ids`` and ``labels`` (``-100`` on system+user) of one sample, or ``None`` if it cannot
    fit ``max_length`` without cutting the instruction or the answer.

    The oldest history items are left out until it fits (at least one stays), and the answer follows the
    shortened prompt (a reasoning sample's rewrite loses the items its prompt no longer shows)."""
    keep_min = 1 if sample.history else 0
    answers: dict[str, list[int]] = {}
    for drop in range(len(sample.history) - keep_min + 1):
        response = sample.response_for(drop)
        if response not in answers:
            answers[response] = tokenizer(answer_text(tokenizer, response), add_special_tokens=False)["input_ids"]
        answer = answers[response]
        prompt = prompt_ids(tokenizer, sample.messages(system, drop)[:-1])
        if len(prompt) + len(answer) <= max_length:
            return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}
    return None


def shortest_encoding(tokenizer, sample: TaskSample, system: str | None) -> int:
    """Tokens ``sample`` needs with all but one history item left out: the least ``max_length`` it fits."""
    drop = max(len(sample.history) - 1, 0)
    answer = tokenizer(answer_text(tokenizer, sample.response_for(drop)), add_special_tokens=False)["input_ids"]
    return len(prompt_ids(tokenizer, sample.messages(system, drop)[:-1])) + len(answer)


def budget_batches(order: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` (sorted by length, shortest first) into batches whose padded size, rows times the
    longest row, is at most ``max_tokens``; a row longer than the budget is a batch of its own."""
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[i] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort inside windows of ``window`` batches, shuffle batches.

    Cuts padding several-fold against random batches while keeping the order random. With
    ``max_tokens`` a batch holds as many rows as fit that many padded tokens instead of ``batch_size``
    rows: short rows share a step, whose cost on a CPU is largely fixed. Those batches are cut from all
    rows sorted by length, ties in a random order, so every epoch has the same number of batches (which
    Lightning's validation schedule and learning-rate schedule count once) with new members; windows
    are not used. Lightning only calls ``set_epoch`` on samplers, not batch samplers, so each ``__iter__`` also
    advances the epoch; ``BatchesDistributedSampler`` sets it explicitly.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        window: int = 50,
        seed: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or null, got {max_tokens}")
        self.lengths, self.batch_size, self.window, self.seed, self.epoch = list(lengths), batch_size, window, seed, 0
        self.max_tokens = max_tokens

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.max_tokens is None:
            return -(-len(self.lengths) // self.batch_size)
        return len(self._batches(0))  # the same count every epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.max_tokens is not None:
            batches = budget_batches(sorted(order, key=self.lengths.__getitem__), self.lengths, self.max_tokens)
        else:
            span, batches = self.batch_size * self.window, []
            for start in range(0, len(order), span):
                chunk = sorted(order[start : start + span], key=self.lengths.__getitem__)
                batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches


def label_index(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices into ``[B * (T - 1)]`` of the positions whose next token is labelled.

    Computed here, on the CPU, so the loss can gather those hidden states without a boolean mask,
    whose data-dependent size would make the GPU wait for the forward pass before the rest of the step
    can be queued (a small model then runs at the speed of the host).
    """
    index = (labels[:, 1:] != IGNORE).reshape(-1).nonzero().squeeze(1)
    if index.numel() == 0:
        raise ValueError("batch has no labelled (assistant) tokens")
    return index


class AlignmentDataModule(CatalogDataModule):
    """Alignment SFT data (docs/gream_spec.md §5.1, §5.4) plus direct-mode evaluation prompts.

    Args:
        index_path: semantic-ID index (``.index.json``) of the catalogue's items.
        backbone: model whose tokenizer and chat template encode the samples.
        tasks: per-task overrides ``{task: {enabled, prompt_samples, data_samples}}`` of
            ``DEFAULT_TASKS``; a task set to ``{enabled: false}`` is off.
        passes: how many times the task set is rebuilt with fresh templates (GREAM: 3).
        side_info_path: teacher ``<D>.user.json`` for itemsearch/preferenceobtain (skipped without).
        max_length: token budget per sample; longer prompts lose their oldest history items.
        val_users: random subset of users for validation (0 = all); test uses ``max_eval_users``.
        eval_system_prompt: system turn of evaluation prompts; GREAM uses none at test time (``null``),
            the default matches training.
        extend_vocab: add the index tokens to the tokenizer; ``False`` requires them to be there
            already (evaluating a trained model) and fails clearly otherwise.
        bucket_window: batches per length-sorting window (0 = plain shuffle).
        max_tokens: training batches of as many rows as fit this many padded tokens instead of
            ``batch_size`` rows (``null``: ``batch_size`` rows; set, ``bucket_window`` does not apply). The
            same budget suits long and short sequences: on a CPU a step of four 12-token rows is mostly
            fixed cost.
        item2index_probe: also evaluate title -> ID on this many random training items (0 = off):
            a second validation/test set named ``item2index`` whose recall@1 is exact-ID accuracy.
        prompt_format: ``chat`` (GREAM's instruction prompts in the backbone's chat template) or
            ``compact`` (``compact_format``: bare ID tokens after a short prefix, about a third of the
            tokens; needed by the ``seqdense`` task).
        seed: template and subset sampling seed.

    Satisfies ``data.stage_data.SFTStageData``, what ``SFTModule`` reads.
    """

    eval_mode = "direct"  # next-item evaluation prompts ask for an ID (CurriculumDataModule: or reasoning)

    def __init__(
        self,
        index_path: str,
        backbone: str = DEFAULT_BACKBONE,
        tasks: dict[str, dict] | None = None,
        passes: int = 1,
        side_info_path: str | None = None,
        max_length: int = 512,
        val_users: int = 200,
        eval_system_prompt: str | None = SYSTEM_PROMPT,
        extend_vocab: bool = True,
        bucket_window: int = 50,
        max_tokens: int | None = None,
        item2index_probe: int = 0,
        prompt_format: str = "chat",
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format: unknown {prompt_format!r}; expected one of {PROMPT_FORMATS}")
        self.save_hyperparameters()
        self.index_path = index_path
        self.backbone = backbone
        self.task_specs = parse_task_specs(tasks)
        if self.task_specs["seqdense"].enabled and prompt_format != "compact":
            raise ValueError("tasks.seqdense needs prompt_format: compact (its rows are bare ID sequences)")
        self.prompt_format = prompt_format
        self.passes = passes
        self.side_info_path = side_info_path
        self.max_length = max_length
        self.val_users = val_users
        self.eval_system_prompt = eval_system_prompt
        self.extend_vocab = extend_vocab
        self.bucket_window = bucket_window
        self.max_tokens = max_tokens
        self.item2index_probe = item2index_probe
        self.seed = seed
        self.tokenizer = None
        self.index: SemanticIndex | None = None
        # compact-format lookups, built on first use
        self._item_rows: list[list[int]] | None = None
        self._prefix_ids: list[int] | None = None
        self._sid_item_map: dict[str, int] | None = None
        self.train_data: list[dict] | None = None
        self.eval_data: dict[str, list[dict]] = {}

    def item_texts(self) -> list[str]:
        return [clean_title(it.get("title", "")) for it in self.catalog.items]

    def _prepare_vocab(self) -> None:
        if self.tokenizer is not None:
            return
        self.index = SemanticIndex.from_json(self.index_path, n_items=self.catalog.n_items, unique=True)
        check_handoff_index(self.index, self.backbone, self.index_path)
        self.tokenizer = load_tokenizer(self.backbone)
        if self.extend_vocab:
            add_index_tokens(self.tokenizer, self.index)
        else:
            require_index_tokens(self.tokenizer, self.index)

    def _sids(self) -> list[str]:
        return [self.index.item_string(i) for i in range(self.index.n_items)]

    def item_rows(self) -> list[list[int]]:
        """Each item's ID token ids, padded to the index depth with EOS (the compact layout)."""
        if self._item_rows is None:
            self._item_rows = compact.item_rows(self.tokenizer, self.index)
        return self._item_rows

    def _compact_prefix(self) -> list[int]:
        if self._prefix_ids is None:
            self._prefix_ids = self.tokenizer(compact.COMPACT_PREFIX, add_special_tokens=False)["input_ids"]
        return self._prefix_ids

    def encode_train(self, samples: list[TaskSample]) -> list[dict | None]:
        """Instruction samples in this module's prompt format (``None`` where one cannot fit)."""
        if self.prompt_format == "chat":
            return [encode_sample(self.tokenizer, s, SYSTEM_PROMPT, self.max_length) for s in samples]
        return [self._encode_compact(s) for s in samples]

    def _encode_compact(self, sample: TaskSample) -> dict | None:
        """Seq-rec samples as bare ID sequences, other tasks as ``instruction\n answer EOS``."""
        eos = self.tokenizer.eos_token_id
        if sample.task == "seqrec":
            rows, by_sid = self.item_rows(), self._sid_items()
            history = [by_sid[h] for h in sample.history]
            prompt = compact.history_prompt(self._compact_prefix(), history, rows, self.max_length)
            return compact.answer_row(prompt, rows[by_sid[sample.response]])
        answer = self.tokenizer(sample.response, add_special_tokens=False)["input_ids"] + [eos]
        for drop in range(len(sample.history) + 1):
            prompt = self.tokenizer(sample.prompt(drop) + "\n", add_special_tokens=False)["input_ids"]
            if len(prompt) + len(answer) <= self.max_length:
                return compact.answer_row(prompt, answer)
        return None

    def _sid_items(self) -> dict[str, int]:
        if self._sid_item_map is None:
            self._sid_item_map = {sid: i for i, sid in enumerate(self._sids())}
        return self._sid_item_map

    def dense_rows(self) -> list[dict]:
        """``seqdense``: one row per user over the training part of the sequence (``seq[:-2]``)."""
        spec = self.task_specs["seqdense"]
        sequences = [s for s in train_sequences(self.catalog) if s]
        if spec.data_samples:
            sequences = random.Random(self.seed).sample(sequences, min(spec.data_samples, len(sequences)))
        prefix, rows = self._compact_prefix(), self.item_rows()
        return [
            compact.dense_row(prefix, seq, rows, self.max_length)
            for _ in range(spec.prompt_samples)
            for seq in sequences
        ]

    def build_datasets(self, stage: str | None) -> None:
        self._prepare_vocab()
        if stage in (None, "fit") and self.train_data is None:
            side = load_side_info(self.side_info_path, self.catalog) if self.side_info_path else {}
            ctx = TaskContext(self.catalog, self._sids(), self.split.train, side, self.max_history)
            samples = build_alignment_samples(ctx, self.task_specs, self.seed, self.passes)
            encoded = self.encode_train(samples)
            self.train_data = [e for e in encoded if e is not None]
            if len(self.train_data) < len(samples):
                log.warning(
                    "dropped %d samples whose answer plus a one-item prompt exceed max_length=%d",
                    len(samples) - len(self.train_data),
                    self.max_length,
                )
            if self.task_specs["seqdense"].enabled:
                dense = self.dense_rows()
                log.info("alignment task seqdense: %d rows", len(dense))
                self.train_data += dense
            lengths = [len(e["input_ids"]) for e in self.train_data]
            log.info("alignment train set: %d samples, mean %.1f tokens", len(lengths), sum(lengths) / len(lengths))
        if stage in (None, "fit", "validate") and "valid" not in self.eval_data:
            valid = self.split.valid
            if self.val_users and self.val_users < len(valid):
                valid = random.Random(self.seed).sample(valid, self.val_users)
            self.eval_data["valid"] = self._encode_eval(valid)
        if stage in (None, "test", "predict") and "test" not in self.eval_data:
            self.eval_data["test"] = self._encode_eval(self.eval_samples("test"))
        if self.item2index_probe and "item2index" not in self.eval_data:
            self.eval_data["item2index"] = self._encode_probe()

    def eval_set_names(self) -> list[str]:
        """Names of the evaluation dataloaders, in order (``direct`` = next-item recommendation)."""
        return ["direct", "item2index"] if self.item2index_probe else ["direct"]

    def _encode_probe(self) -> list[dict]:
        trained = sorted({i for seq in self.catalog.sequences for i in seq[:-2]})
        items = random.Random(self.seed).sample(trained, min(self.item2index_probe, len(trained)))
        sids, out = self._sids(), []
        for item in items:
            title = clean_title(self.catalog.title(item))
            sample = TaskSample("item2index", ITEM2INDEX[0][1], (), sids[item], {"title": title})
            ids = fit_prompt(self.tokenizer, sample, self.eval_system_prompt, self.max_length)
            if ids is None:
                raise ValueError(f"item2index probe prompt of item {item} exceeds max_length={self.max_length}")
            out.append({"input_ids": ids, "target": item})
        return sorted(out, key=lambda r: len(r["input_ids"]))

    def direct_prompt(self) -> DirectPrompt:
        """The layout of this module's direct-mode evaluation prompts, which a recommender built from
        the stage must write too (``gream_lit.inference.bundle``)."""
        if self.prompt_format == "compact":
            return DirectPrompt("compact", self.max_length, self.max_history)
        return DirectPrompt("chat", self.max_length, self.max_history, self.eval_system_prompt)

    def reasoning_prompt(self) -> DirectPrompt | None:
        """The layout of reasoning-mode prompts: none, alignment data has no reasoning mode."""
        return None

    def eval_prompt_layout(self) -> DirectPrompt:
        """The layout of the validation and test prompts: the direct-mode one here."""
        return self.direct_prompt()

    def _encode_eval(self, samples: list[Sample]) -> list[dict]:
        layout = self.eval_prompt_layout()
        rows = self.item_rows() if layout.format == "compact" else None
        out = []
        for s in samples:
            try:
                ids = layout.encode(self.tokenizer, self.index, s.history, rows)
            except ValueError as err:
                raise ValueError(f"user {s.user}: evaluation prompt: {err}") from err
            row = {"input_ids": ids, "target": s.target, "user": s.user}
            out.append({**row, "seen": self.seen(s)} if self.exclude_seen else row)
        return sorted(out, key=lambda r: len(r["input_ids"]))  # similar lengths per batch: less padding

    def _collate_train(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = pad([r["input_ids"] for r in rows], self.tokenizer.pad_token_id)
        labels = pad([r["labels"] for r in rows], IGNORE)
        return {
            "input_ids": ids,
            "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0),
            "labels": labels,
            "label_index": label_index(labels),
        }

    def _collate_eval(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": pad([r["input_ids"] for r in rows], self.tokenizer.pad_token_id, left=True),
            "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0, left=True),
            "target": torch.tensor([r["target"] for r in rows], dtype=torch.long),
            "user": torch.tensor([r.get("user", -1) for r in rows], dtype=torch.long),
        }
        if "seen" in rows[0]:
            batch["seen"] = pad([r["seen"] for r in rows], -1)
        return batch

    def train_dataloader(self) -> DataLoader:
        common = {"collate_fn": self._collate_train, "num_workers": self.num_workers}
        if self.bucket_window or self.max_tokens:
            lengths = [len(r["input_ids"]) for r in self.train_data]
            buckets = BucketBatchSampler(lengths, self.batch_size, self.bucket_window, self.seed, self.max_tokens)
            # Whole buckets dealt to ranks: a bare batch_sampler cannot run under DDP.
            sampler = BatchesDistributedSampler(buckets)
            return ResumableDataLoader(BatchedRows(self.train_data), batch_size=None, sampler=sampler, **common)
        return ResumableDataLoader(self.train_data, batch_size=self.batch_size, shuffle=True, **common)

    def _eval_loader(self, split: str) -> DataLoader:
        return self.eval_loader(self.eval_data[split], collate_fn=self._collate_eval)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.item2index_probe:
            return [self._eval_loader("valid"), self._eval_loader("item2index")]
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.item2index_probe:
            return [self._eval_loader("test"), self._eval_loader("item2index")]
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test users' prompts: ``predict`` ranks what ``test`` scores."""
        return self._eval_loader("test")
