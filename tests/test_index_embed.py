"""Item text embedding: field handling, causal-LM mean pooling, on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.indexing.embed import CausalLMEncoder, embed_items, field_texts, load_embeddings, resolve_model_path
from gream_lit.modeling.tiny import tiny_causal_lm


def _catalog(items: list[dict[str, str]]) -> Catalog:
    return Catalog("toy", [[0, 1]], items, [str(i) for i in range(len(items))], ["u0"])


class CountingEncoder:
    """Embeds a text as [len, number of words] and counts calls, to test averaging and caching."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.array([[len(t), len(t.split())] for t in texts], dtype=np.float32)


def test_fields_are_embedded_separately_and_averaged_over_non_empty_ones(tmp_path) -> None:
    cat = _catalog([{"title": "ab cd", "description": "x"}, {"title": "abc", "description": ""}])
    enc = CountingEncoder()
    emb = embed_items(cat, enc, ["title", "description"], cache_dir=tmp_path)
    assert emb.tolist() == [[3.0, 1.5], [3.0, 1.0]]  # item 0: mean of (5,2) and (1,1); item 1: title only
    calls = enc.calls
    again = embed_items(cat, enc, ["title", "description"], cache_dir=tmp_path)
    assert enc.calls == calls and np.array_equal(emb, again)  # served from the cache
    embed_items(cat, enc, ["title"], cache_dir=tmp_path)
    assert enc.calls > calls  # other fields, other cache key


def test_item_without_text_is_an_error() -> None:
    cat = _catalog([{"title": "a"}, {"title": "  "}])
    with pytest.raises(DataError, match="1 items have no text.*item '1'"):
        field_texts(cat, ["title"])


def test_nan_embedding_file_is_rejected(tmp_path) -> None:
    bad = np.zeros((3, 2), dtype=np.float32)
    bad[2, 0] = np.nan
    np.save(tmp_path / "e.npy", bad)
    with pytest.raises(DataError, match="NaN or inf, e.g. row 2"):
        load_embeddings(tmp_path / "e.npy")
    np.save(tmp_path / "ok.npy", np.eye(3, 2) + 0.5)
    with pytest.raises(DataError, match="3 rows but the catalogue has 4"):
        load_embeddings(tmp_path / "ok.npy", n_items=4)


def test_causal_lm_mean_pools_non_pad_tokens_only() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    model = tiny_causal_lm(tok.vocab_size, hidden_size=32, pad_token_id=tok.pad_token_id).model
    enc = CausalLMEncoder(model, tok, name="tiny")
    short, long = "red lamp", "a much longer product title with many more words"
    batched = enc.encode([short, long])
    alone = enc.encode([short])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)  # padding does not leak into the mean
    ids = tok([short], return_tensors="pt")
    with torch.no_grad():
        manual = model(**ids).last_hidden_state.mean(1)
    np.testing.assert_allclose(alone, manual.numpy(), atol=1e-5)
