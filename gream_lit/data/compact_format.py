"""The compact text format: a short prefix, then items as bare ID tokens, no chat template.

A direct-mode prompt in the chat format costs about 3x the tokens of its IDs (system turn, chat
markers, instruction words, ", " between IDs); on a CPU those tokens are most of the prefill. In the
compact format a history is ``"History:" <a_1><b_7><c_3><d_1><a_4>...`` and the model continues with
the next item's ID, so training rows, evaluation prompts and the ``seqdense`` objective share one
layout. Every item spans exactly ``depth`` tokens: a shorter ID is padded with EOS, as the decoding
trie pads it (``inference.prefix_tables``), so item boundaries never need separators.

Instruction tasks with text (item2index, index2item, ...) are written as ``"{instruction}\\n"``
followed by the answer and EOS.
"""

from __future__ import annotations

from collections.abc import Sequence

from gream_lit.data.semantic_index import SemanticIndex

COMPACT_PREFIX = "History:"
IGNORE = -100


def item_rows(tokenizer, index: SemanticIndex) -> list[list[int]]:
    """Each item's ID token ids, padded to the index depth with EOS (shorter IDs end in EOS)."""
    eos, depth = tokenizer.eos_token_id, index.depth
    rows = []
    for item in range(index.n_items):
        ids = tokenizer.convert_tokens_to_ids(index.item_tokens(item))
        rows.append(ids + [eos] * (depth - len(ids)))
    return rows


def fit_history(history: Sequence[int], depth: int, budget: int) -> Sequence[int]:
    """The most recent items of ``history`` whose ID tokens fit ``budget`` (at least one item)."""
    keep = max(1, budget // depth)
    return history[-keep:]


def history_prompt(prefix: list[int], history: Sequence[int], rows: list[list[int]], max_length: int) -> list[int]:
    """Prompt ids: prefix + the ID tokens of the most recent history items that fit ``max_length``
    together with one answer; raises when not even one item fits."""
    depth = len(rows[0])
    budget = max_length - len(prefix) - depth
    if budget < depth:
        raise ValueError(f"max_length={max_length} leaves no room for one item of {depth} tokens after the prefix")
    return prefix + [t for item in fit_history(history, depth, budget) for t in rows[item]]


def dense_row(prefix: list[int], sequence: Sequence[int], rows: list[list[int]], max_length: int) -> dict:
    """One training row over a whole item sequence: every item's ID tokens are targets, each
    conditioned on the items before it (the SASRec objective written for a causal LM).

    The first item is predicted from the prefix alone. Sequences longer than ``max_length`` keep
    their most recent items.
    """
    depth = len(rows[0])
    items = fit_history(sequence, depth, max_length - len(prefix))
    body = [t for item in items for t in rows[item]]
    return {"input_ids": prefix + body, "labels": [IGNORE] * len(prefix) + body}


def answer_row(prompt: list[int], answer: list[int]) -> dict:
    """A prompt followed by its answer; the loss is on the answer only."""
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}
