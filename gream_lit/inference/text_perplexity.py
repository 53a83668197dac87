"""Perplexity of a causal LM on plain text: does a recommender fine-tune keep the base model's language?

GREAM's reasoning mode needs the model to still write text after its IDs were trained in; the
perplexity of held-out text, against the base model's, says how much of that language survived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gream_lit.data.padding import pad


@torch.no_grad()
def text_nll(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 16
) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, predicted tokens) of ``texts`` over the full vocabulary;
    each text is scored on its own, every token after its first predicted from the ones before."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + batch_size]]
        rows = [r for r in rows if len(r) > 1]
        if not rows:
            continue
        ids, mask = pad(rows, tokenizer.pad_token_id or 0), pad([[1] * len(r) for r in rows], 0)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        keep = mask[:, 1:].bool()
        total += nll[keep].sum().item()
        count += int(keep.sum())
    return total, count


def perplexity(nll: float, tokens: int) -> float:
    """``exp`` of the mean token NLL; ``nan`` without tokens."""
    return math.exp(nll / tokens) if tokens else math.nan
