"""Collaborative signal for semantic IDs: co-occurrence item embeddings, their fusion with text embeddings,
and a measure of whether an index groups items that users consume one after another.

Semantic IDs from short, noisy titles put items together that users do not consume together, and neither
the ID-only objective nor a larger budget can repair such an index. LETTER adds a collaborative term to the
tokenizer; the cheapest equivalent is to quantise text and behaviour together. The behaviour comes from the
training parts of the sequences only (``seq[:-2]``), so no validation or test target leaks into the IDs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import svds


def cooccurrence_embeddings(
    sequences: Sequence[Sequence[int]], n_items: int, dim: int = 64, window: int = 3
) -> np.ndarray:
    """``[n_items, dim]`` item embeddings: the positive PMI of items met within ``window`` steps of each
    other in a sequence, factorised by truncated SVD (rows ``U sqrt(S)``). Items never met stay zero."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rows, cols = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        for gap in range(1, min(window, len(seq) - 1) + 1):
            rows += [seq[:-gap], seq[gap:]]
            cols += [seq[gap:], seq[:-gap]]
    if not rows:
        return np.zeros((n_items, dim), dtype=np.float32)
    r, c = np.concatenate(rows), np.concatenate(cols)
    keep = r != c
    counts = coo_matrix((np.ones(int(keep.sum())), (r[keep], c[keep])), shape=(n_items, n_items)).tocsr()
    counts.sum_duplicates()
    total = counts.sum()
    marginal = np.asarray(counts.sum(1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (marginal[coo.row] * marginal[coo.col]))
    positive = pmi > 0
    ppmi = coo_matrix((pmi[positive], (coo.row[positive], coo.col[positive])), shape=(n_items, n_items)).tocsr()
    k = min(dim, n_items - 2)
    if ppmi.nnz == 0 or k < 1:
        return np.zeros((n_items, dim), dtype=np.float32)
    u, s, _ = svds(ppmi, k=k, random_state=0)
    out = np.zeros((n_items, dim), dtype=np.float32)
    out[:, :k] = (u * np.sqrt(s)).astype(np.float32)
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0)


def fuse(text: np.ndarray, collaborative: np.ndarray, weight: float) -> np.ndarray:
    """Both embeddings scaled to unit rows and concatenated, the collaborative half carrying ``weight`` of
    each row's squared norm (0: text alone, 1: behaviour alone); squared distances then mix the two
    in that proportion, which is what k-means and an RQ-VAE's reconstruction loss see."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the collaborative weight must lie in [0, 1], got {weight}")
    if len(text) != len(collaborative):
        raise ValueError(f"{len(text)} text embeddings but {len(collaborative)} collaborative ones")
    parts = [np.sqrt(1.0 - weight) * _unit_rows(text), np.sqrt(weight) * _unit_rows(collaborative)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def sequential_prefix_lift(codes: np.ndarray, sequences: Sequence[Sequence[int]], prefix: int = 1) -> dict[str, float]:
    """How often two items consumed one after the other share their first ``prefix`` codes, against chance.

    Chance is the rate for independent draws from the same item frequencies (``sum_g p_first(g) p_second(g)``
    over prefix groups ``g``), so popular groups do not count as signal. A lift near 1 means the IDs ignore
    what users consume together.
    """
    firsts = [np.asarray(s[:-1], dtype=np.int64) for s in sequences if len(s) > 1]
    seconds = [np.asarray(s[1:], dtype=np.int64) for s in sequences if len(s) > 1]
    if not firsts:
        return {}
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    keep = a != b
    a, b = a[keep], b[keep]
    if not len(a):
        return {}
    _, group = np.unique(codes[:, :prefix], axis=0, return_inverse=True)
    group = group.reshape(-1)
    observed = float(np.mean(group[a] == group[b]))
    n_groups = int(group.max()) + 1
    p_a = np.bincount(group[a], minlength=n_groups) / len(a)
    p_b = np.bincount(group[b], minlength=n_groups) / len(b)
    chance = float((p_a * p_b).sum())
    key = f"collaborative/next_item_prefix{prefix}"
    return {f"{key}_shared": observed, f"{key}_chance": chance, f"{key}_lift": observed / max(chance, 1e-12)}
