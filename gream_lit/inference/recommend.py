"""``recommend``: the few-line way to get top-k items for raw histories from a trained LLM recommender."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gream_lit.data.padding import pad
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.templates import DIRECT_EVAL_TEMPLATE
from gream_lit.inference.constrained_beam import BeamResult, constrained_beam_search
from gream_lit.inference.prefix_tables import build_prefix_tables, index_token_ids


def direct_prompt(history: Sequence[int], index: SemanticIndex, tokenizer) -> str:
    """Direct-mode prompt: the seq-rec instruction over the history's IDs as one user chat turn,
    no system message, with the generation prompt (docs/gream_spec.md §8.1)."""
    text = DIRECT_EVAL_TEMPLATE.format(history=", ".join(index.item_string(i) for i in history))
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def tokenize_left_padded(prompts: list[str], tokenizer, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Batch of chat strings, left-padded (the decoder appends on the right); no extra special tokens."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


@torch.no_grad()
def recommend(
    model: torch.nn.Module,
    tokenizer,
    index: SemanticIndex,
    histories: Sequence[Sequence[int]],
    k: int = 10,
    num_beams: int | None = None,
    batch_size: int = 16,
    prompt_fn: Callable[[Sequence[int], SemanticIndex, object], str] = direct_prompt,
    exclude_seen: bool = False,
) -> BeamResult:
    """Top-``k`` catalogue items for each history (item indices, oldest first), best first.

    Decodes with the prefix-trie constraint, so every returned item exists; ``num_beams`` defaults to
    ``k``. ``exclude_seen``: no item of the history is returned (masked inside the search, so the list
    stays full). Returns a ``BeamResult`` with ``items``/``scores`` of shape ``[len(histories), k]``.
    """
    if not histories:
        raise ValueError("recommend() needs at least one history")
    beams = num_beams or k
    if beams < k:
        raise ValueError(f"num_beams={beams} is smaller than k={k}")
    device = next(model.parameters()).device
    tables = build_prefix_tables(index_token_ids(index, tokenizer), tokenizer.eos_token_id).to(device)
    was_training = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, len(histories), batch_size):
            chunk = [list(h) for h in histories[start : start + batch_size]]
            enc = tokenize_left_padded([prompt_fn(h, index, tokenizer) for h in chunk], tokenizer, device)
            exclude = pad(chunk, -1).to(device) if exclude_seen else None
            parts.append(
                constrained_beam_search(model, enc["input_ids"], enc["attention_mask"], tables, beams, exclude=exclude)
            )
    finally:
        model.train(was_training)
    return BeamResult(
        items=torch.cat([p.items[:, :k] for p in parts]),
        scores=torch.cat([p.scores[:, :k] for p in parts]),
        tokens=torch.cat([p.tokens[:, :k] for p in parts]),
    )
