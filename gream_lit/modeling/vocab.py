"""Give the LM one atomic token per semantic-ID code (docs/gream_spec.md §4.5) and initialise the new rows.

Two initialisations:

* ``hf_default``: whatever ``resize_token_embeddings`` does (transformers >= 4.46 draws new rows
  from a normal matched to the mean/covariance of the existing rows), as the official code does.
* ``text_mean``: row of token ``<|a_c|>`` = mean over the items whose level-``a`` code is ``c`` of
  the mean input embedding of that item's text (title by default). A new code then starts near the
  words of the items it groups, which gives a small model a head start; codes no item uses keep
  the ``hf_default`` row. With tied embeddings this sets the output row too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex

INIT_METHODS = ("hf_default", "text_mean")


def add_index_tokens(tokenizer: PreTrainedTokenizerBase, index: SemanticIndex) -> list[int]:
    """Add the index's tokens as special (never split) tokens; return the ids of all of them."""
    tokens = index.all_tokens()
    tokenizer.add_tokens(tokens, special_tokens=True)
    return tokenizer.convert_tokens_to_ids(tokens)


def require_index_tokens(tokenizer: PreTrainedTokenizerBase, index: SemanticIndex) -> list[int]:
    """Ids of the index's tokens in a tokenizer loaded for evaluation; raise if any is absent.

    A model evaluated with an index it was not trained on would silently score garbage, so this is
    an error naming how many tokens are missing and a few of them.
    """
    tokens = index.all_tokens()
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise DataError(
            f"tokenizer {tokenizer.name_or_path!r} lacks {len(missing)} of the index's {len(tokens)} ID tokens "
            f"(e.g. {missing[:3]}); load the model saved by the alignment stage or extend the vocabulary"
        )
    return [vocab[t] for t in tokens]


def mean_text_embeddings(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """``[len(texts), hidden]``: mean input-embedding row of each text's tokens (zeros for empty text)."""
    emb = model.get_input_embeddings().weight.detach()
    out = torch.zeros(len(texts), emb.shape[1], dtype=emb.dtype)
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(list(texts[start : start + batch_size]), add_special_tokens=False)["input_ids"]
        for row, seq in enumerate(ids):
            if seq:
                out[start + row] = emb[torch.tensor(seq)].mean(dim=0)
    return out


def code_means(item_vectors: torch.Tensor, index: SemanticIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token of ``index.all_tokens()``: mean of the vectors of items carrying that code, and a
    mask of tokens used by at least one item."""
    sums, counts = [], []
    for level, size in enumerate(index.codebook_sizes):
        codes = torch.as_tensor(index.codes[:, level])
        present = codes >= 0
        s = torch.zeros(size, item_vectors.shape[1], dtype=item_vectors.dtype)
        s.index_add_(0, codes[present], item_vectors[present])
        sums.append(s)
        counts.append(torch.bincount(codes[present], minlength=size))
    total, count = torch.cat(sums), torch.cat(counts)
    used = count > 0
    return total / count.clamp(min=1).unsqueeze(1).to(total.dtype), used


def extend_model_vocab(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    index: SemanticIndex,
    init: str = "hf_default",
    item_texts: Sequence[str] | None = None,
) -> list[int]:
    """Resize the model to the tokenizer (which must already hold the index tokens) and initialise
    the index tokens' rows; return their ids. A model that already has them is left as it is."""
    if init not in INIT_METHODS:
        raise ValueError(f"unknown embedding init {init!r}; expected one of {INIT_METHODS}")
    token_ids = require_index_tokens(tokenizer, index)
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old_rows:
        return token_ids
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if init == "text_mean":
        if item_texts is None or len(item_texts) != index.n_items:
            raise ValueError(f"text_mean init needs one text per index item ({index.n_items})")
        means, used = code_means(mean_text_embeddings(model, tokenizer, item_texts), index)
        ids = torch.tensor(token_ids)
        fresh = used & (ids >= old_rows)
        with torch.no_grad():
            model.get_input_embeddings().weight[ids[fresh]] = means[fresh]
    return token_ids
