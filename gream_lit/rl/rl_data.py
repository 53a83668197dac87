"""RL prompts (docs/gream_spec.md §7.1): next-item questions over semantic IDs, answered by the policy's rollouts.

For every user and every target position ``i`` with at least ``min_history`` earlier items, the
prompt asks for ``seq[i]`` given ``seq[:i][-max_history:]``: targets before the validation item train,
the validation item (``seq[T-2]``) validates, and the test item is only used by ``test``.
Reasoning prompts carry the curriculum SFT's system message (think / rewrite / ``<answer>``); direct
prompts carry the alignment SFT's, the turn our SFT stages train and test with (an empty
``system_prompt`` gives GREAM's bare instruction, to which a chat template may add its own default).
Templates are the SFT's seq-rec pool (random per prompt) and its fixed evaluation template for ``test``.
With ``prompt_format: compact`` a prompt is the compact text of an SFT stage trained in that format
(``compact_format``): the prefix and the history's bare ID tokens, no chat turn; in reason mode these are
the prompts of the short-thought curriculum (``cot_layout: short``), after which the policy writes
``<think>thought</think>`` and then the ID.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from gream_lit.data import compact_format as compact
from gream_lit.data.catalog import DataError
from gream_lit.data.datamodule import CatalogDataModule
from gream_lit.data.direct_prompt import DirectPrompt
from gream_lit.data.padding import pad
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import Sample
from gream_lit.data.templates import DIRECT_EVAL_TEMPLATE, SEQREC
from gream_lit.data.text_format import HISTORY_SEP, REASONING_SYSTEM_PROMPT, SYSTEM_PROMPT

MODES = ("reason", "direct")


def rl_messages(history: str, mode: str, template: str, system_prompt: str | None = None) -> list[dict]:
    """Chat messages of one RL prompt; ``history`` is the items' IDs joined by ``", "``.

    ``system_prompt``: ``None`` = the SFT stage's prompt for ``mode``; ``""`` = no system turn.
    """
    if mode not in MODES:
        raise ValueError(f"unknown RL mode {mode!r}; expected one of {MODES}")
    if system_prompt is None:
        system_prompt = REASONING_SYSTEM_PROMPT if mode == "reason" else SYSTEM_PROMPT
    user = {"role": "user", "content": template.format(history=history)}
    return [{"role": "system", "content": system_prompt}, user] if system_prompt else [user]


def by_length(rows: list[dict]) -> list[dict]:
    """Evaluation prompts shortest first, so a batch pads to similar lengths (users keep their row)."""

    def size(row: dict) -> int:
        prompt = row["messages"]
        return len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)

    return sorted(rows, key=size)


def collate_prompts(rows: list[dict]) -> dict[str, list]:
    """Batch of prompts as lists (tokenising is the policy's job: it owns the tokenizer)."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def seen_tensor(batch: dict[str, list], device: torch.device | str) -> torch.Tensor | None:
    """``[B, H]`` items each prompt's user must not be recommended (``-1`` padded), or ``None`` when the
    data module does not exclude them (``exclude_seen``)."""
    return pad(batch["seen"], -1).to(device) if "seen" in batch else None


def check_one_length(index: SemanticIndex, path: str | Path) -> None:
    """Compact RL prompts end where the answer starts, so every ID must have the same number of tokens."""
    lengths = sorted(set(index.lengths().tolist()))
    if len(lengths) > 1:
        raise DataError(
            f"{path}: compact RL prompts need IDs of one length, but this index has IDs of {lengths} tokens (the "
            "SFT layout pads shorter IDs with EOS); build it with collision: pad_all or reassign, or use "
            "prompt_format: chat"
        )


class RLDataModule(CatalogDataModule):
    """Prompts for SRPO rollouts; batches are ``{"messages", "target", "item", "user", "history"}`` lists
    (plus ``seen`` with ``exclude_seen``)
    (``messages`` is a chat turn list, or the prompt text itself in the compact format).

    Args:
        index_path: the semantic-ID index file (``<D>.index.json``) of the aligned model.
        mode: ``reason`` (GREAM's RL data) or ``direct``.
        eval_mode: ``direct`` or ``reasoning``: how validation and test prompts are answered by a
            short-thought policy (``SRPOModule(reasoning=...)``): ``reasoning`` thinks first, as the
            curriculum's reasoning-mode test (``python -m gream_lit test RUN --mode reasoning`` sets it).
        min_history: smallest history a prompt may have (GREAM: 4).
        max_val_prompts: random validation prompts kept (GREAM: 1000, seed 42; 0 = all).
        max_train_prompts: random training prompts kept (0 = all), for quick runs.
        seed: seed of the template draw and of the subsets.
        system_prompt: system turn; ``None`` = the SFT stage's for ``mode``, ``""`` = none.
        prompt_format: ``chat`` or ``compact`` (the SFT stage's format; in reason mode the short layout).
        other arguments: see ``CatalogDataModule`` (``batch_size`` = prompts per generation batch).

    Satisfies ``data.stage_data.RLStageData``, what ``SRPOModule`` reads.
    """

    def __init__(
        self,
        data_dir: str = "",
        format: str = "lcrec",
        *,
        index_path: str,
        mode: str = "reason",
        max_history: int = 20,
        min_history: int = 4,
        batch_size: int = 256,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        max_eval_users: int = 0,
        max_val_prompts: int = 1000,
        max_train_prompts: int = 0,
        seed: int = 42,
        system_prompt: str | None = None,
        prompt_format: str = "chat",
        exclude_seen: bool = False,
        eval_mode: Literal["direct", "reasoning"] = "direct",
    ) -> None:
        super().__init__(
            data_dir,
            format,
            max_history,
            batch_size,
            eval_batch_size,
            num_workers,
            max_eval_users,
            exclude_seen=exclude_seen,
        )
        if mode not in MODES:
            raise DataError(f"RLDataModule: unknown mode {mode!r}; expected one of {MODES}")
        if prompt_format not in ("chat", "compact"):
            raise DataError(f"RLDataModule: prompt_format {prompt_format!r}; expected 'chat' or 'compact'")
        if eval_mode == "reasoning" and (mode, prompt_format) != ("reason", "compact"):
            raise DataError(
                f"RLDataModule: eval_mode 'reasoning' with mode {mode!r} and prompt_format {prompt_format!r}; it "
                "tests short thoughts: mode reason, prompt_format compact"
            )
        if not index_path:
            raise DataError("RLDataModule: index_path is required (the aligned model's semantic-ID index)")
        self.index_path = index_path
        self.mode = mode
        self.min_history = min_history
        self.max_val_prompts = max_val_prompts
        self.max_train_prompts = max_train_prompts
        self.seed = seed
        self.system_prompt = system_prompt
        self.prompt_format = prompt_format
        self.eval_mode = eval_mode
        self.index: SemanticIndex | None = None
        self.val_available: int | None = None

    def load(self):
        catalog = super().load()
        if self.index is None:
            self.index = SemanticIndex.from_json(Path(self.index_path), n_items=catalog.n_items, unique=True)
            if self.prompt_format == "compact":
                check_one_length(self.index, self.index_path)
        return catalog

    @classmethod
    def check_inputs(cls, init_args: Mapping[str, Any]) -> None:
        """What a pipeline checks before earlier stages spend their minutes: an index that already exists
        (an earlier stage wrote it) has IDs of one length where compact prompts need it."""
        path = init_args.get("index_path")
        prompt_format = init_args.get("prompt_format", inspect.signature(cls).parameters["prompt_format"].default)
        if prompt_format == "compact" and path and Path(path).is_file():
            check_one_length(SemanticIndex.from_json(Path(path)), path)

    def sid(self, item: int) -> str:
        return self.index.item_string(item)

    def direct_prompt(self, max_prompt_tokens: int) -> DirectPrompt:
        """The layout of direct-mode prompts for a recommender built from the policy; ``max_prompt_tokens``
        is the policy's prompt budget. A reasoning policy (``mode: reason``) answers them with an ID
        without thinking, as the SFT stages' direct test prompts it."""
        if self.prompt_format == "compact":
            return DirectPrompt("compact", max_prompt_tokens + self.index.depth, self.max_history)
        system = SYSTEM_PROMPT if self.system_prompt is None or self.mode == "reason" else self.system_prompt or None
        return DirectPrompt("chat", max_prompt_tokens, self.max_history, system, DIRECT_EVAL_TEMPLATE)

    def reasoning_prompt(self, max_prompt_tokens: int) -> DirectPrompt:
        """The layout of this module's reasoning-mode evaluation prompts (``mode: reason``); compact
        prompts are the direct ones (the decoding appends ``<think>``)."""
        if self.mode != "reason":
            raise DataError(f"RLDataModule: a reasoning prompt layout needs mode reason, not {self.mode!r}")
        if self.prompt_format == "compact":
            return self.direct_prompt(max_prompt_tokens)
        system = REASONING_SYSTEM_PROMPT if self.system_prompt is None else self.system_prompt or None
        return DirectPrompt("chat", max_prompt_tokens, self.max_history, system, DIRECT_EVAL_TEMPLATE)

    def compact_prompt(self, history: Sequence[int]) -> str:
        """The compact prompt text: the prefix and the history's ID tokens."""
        return compact.COMPACT_PREFIX + "".join(self.sid(i) for i in history)

    def prompts(self, samples: Sequence[Sample], rng: random.Random | None) -> list[dict]:
        """Rows for ``samples``; a random seq-rec template each, or the fixed evaluation one if no rng."""
        rows = []
        for s in samples:
            template = SEQREC[rng.randrange(len(SEQREC))][1] if rng else DIRECT_EVAL_TEMPLATE
            history = HISTORY_SEP.join(self.sid(i) for i in s.history)
            if self.prompt_format == "compact":
                prompt = self.compact_prompt(s.history)
            else:
                prompt = rl_messages(history, self.mode, template, self.system_prompt)
            rows.append(
                {
                    "messages": prompt,
                    "target": self.sid(s.target),
                    "item": s.target,
                    "user": s.user,
                    "history": list(s.history),
                    **({"seen": self.seen(s)} if self.exclude_seen else {}),
                }
            )
        return rows

    def _subset(self, samples: list[Sample], size: int, salt: int) -> list[Sample]:
        if not size or size >= len(samples):
            return samples
        return random.Random(self.seed + salt).sample(samples, size)

    def build_datasets(self, stage: str | None) -> None:
        rng = random.Random(self.seed)
        enough = [s for s in self.split.train if len(s.history) >= self.min_history]
        valid = [s for s in self.split.valid if len(s.history) >= self.min_history]
        if stage in ("fit", None):
            train = self._subset(enough, self.max_train_prompts, 1)
            if not train:
                raise DataError(f"{self.catalog.name}: no training prompt has >= {self.min_history} history items")
            self.train_set = self.prompts(train, rng)
        if stage in ("fit", "validate", None):
            self.val_available = len(valid)  # validation users before ``max_val_prompts``
            self.valid_set = by_length(self.prompts(self._subset(valid, self.max_val_prompts, 0), rng))
        if stage in ("test", "predict", None):
            self.test_set = by_length(self.prompts(self.eval_samples("test"), None))

    def _loader(self, rows: list[dict], batch_size: int, shuffle: bool = False) -> DataLoader:
        return ResumableDataLoader(
            rows, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers, collate_fn=collate_prompts
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.valid_set, collate_fn=collate_prompts)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, collate_fn=collate_prompts)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
