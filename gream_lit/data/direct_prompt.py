"""Direct-mode prompts: the token ids a stage's model reads before it writes the next item's ID.

A stage evaluates, and a recommender built from its hand-off must prompt, in the same layout: the
compact format (a prefix and the history's bare ID tokens) or a chat turn (the seq-rec instruction
over the history's IDs, with or without a system turn). ``DirectPrompt`` records that layout in a
stage's bundle (``gream_lit.inference.bundle``) and encodes histories; the data modules encode their
evaluation prompts with it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from gream_lit.data import compact_format as compact
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.templates import DIRECT_EVAL_TEMPLATE
from gream_lit.data.text_format import TaskSample

PROMPT_FORMATS = ("chat", "compact")


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a chat prompt with the generation prompt appended."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompt(tokenizer, sample: TaskSample, system: str | None, budget: int) -> list[int] | None:
    """Prompt ids within ``budget`` tokens, dropping the oldest history items (at least one is kept
    when the sample has a history); ``None`` when even that does not fit."""
    keep_min = 1 if sample.history else 0
    for drop in range(len(sample.history) - keep_min + 1):
        ids = prompt_ids(tokenizer, sample.messages(system, drop)[:-1])
        if len(ids) <= budget:
            return ids
    return None


@dataclass(frozen=True)
class DirectPrompt:
    """How a stage writes the prompt that its model answers with an item's ID: the direct-mode
    layout of its hand-off, or (chat, reasoning template) the prompt of a reasoning-mode evaluation.

    Args:
        format: ``compact`` or ``chat``.
        max_length: token budget of the prompt plus one answer (compact) or of the prompt (chat);
            the oldest history items are left out to fit.
        max_history: most recent history items kept (as the stage's data split kept them).
        system: chat only: the system turn (``None``: no system turn).
        template: chat only: the user turn, formatted with ``history``.
    """

    format: str
    max_length: int
    max_history: int
    system: str | None = None
    template: str = DIRECT_EVAL_TEMPLATE

    def __post_init__(self) -> None:
        if self.format not in PROMPT_FORMATS:
            raise ValueError(f"prompt format {self.format!r}; expected one of {PROMPT_FORMATS}")

    def encode(
        self, tokenizer, index: SemanticIndex, history: Sequence[int], rows: list[list[int]] | None = None
    ) -> list[int]:
        """Prompt ids for ``history`` (catalogue positions, oldest first); ``rows`` caches
        ``compact_format.item_rows`` across calls."""
        if not history:
            raise ValueError("a direct-mode prompt needs at least one history item")
        history = list(history)[-self.max_history :]
        if self.format == "compact":
            prefix = tokenizer(compact.COMPACT_PREFIX, add_special_tokens=False)["input_ids"]
            return compact.history_prompt(prefix, history, rows or compact.item_rows(tokenizer, index), self.max_length)
        sample = TaskSample("seqrec", self.template, tuple(index.item_string(i) for i in history), "")
        ids = fit_prompt(tokenizer, sample, self.system, self.max_length)
        if ids is None:
            raise ValueError(f"the chat prompt exceeds max_length={self.max_length} even with one history item")
        return ids

    def to_dict(self) -> dict:
        return asdict(self)
