"""Quality of a semantic-ID index: collisions, codebook use, balance, quantisation error, semantics.

The semantic check asks whether the IDs mean anything: items sharing a 2-level prefix should share a
leaf category (or title words) much more often than random pairs; the report gives that lift. The
collaborative check asks whether they follow behaviour: items a user consumed one after the other should
share a first code more often than chance (``collaborative.sequential_prefix_lift``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from gream_lit.data.catalog import Catalog
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import train_sequences
from gream_lit.indexing.collaborative import sequential_prefix_lift
from gream_lit.indexing.collisions import collision_rate
from gream_lit.tables import format_metric_table


def level_stats(col: np.ndarray, size: int) -> dict[str, float]:
    """Usage (share of codes used), perplexity (exp entropy of code frequencies), and cluster-size spread."""
    col = col[col >= 0]
    counts = np.bincount(col, minlength=size)
    used = counts[counts > 0]
    p = used / used.sum()
    return {
        "usage": len(used) / size,
        "perplexity": float(np.exp(-(p * np.log(p)).sum())),
        "size_min": float(used.min()),
        "size_max": float(used.max()),
        "size_cv": float(used.std() / used.mean()),
    }


def residual_errors(codes: np.ndarray, emb: np.ndarray) -> list[float]:
    """Mean squared residual after each level, centroids = mean residual per code (any quantiser's codes)."""
    r = emb.astype(np.float64) - emb.mean(0)
    errors = []
    for level in range(codes.shape[1]):
        col = codes[:, level]
        has = col >= 0
        k = int(col.max()) + 1
        sums = np.zeros((k, r.shape[1]))
        np.add.at(sums, col[has], r[has])
        cents = sums / np.maximum(np.bincount(col[has], minlength=k), 1)[:, None]
        r = r.copy()
        r[has] -= cents[col[has]]
        errors.append(float((r**2).sum(1).mean()))
    return errors


def _pairs_same_group(keys: np.ndarray, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Random pairs of distinct items with equal ``keys`` (items in singleton groups are never drawn)."""
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    eligible = np.flatnonzero(counts[inverse] > 1)
    if len(eligible) == 0:
        return np.empty((0, 2), dtype=np.int64)
    members = {g: np.flatnonzero(inverse == g) for g in np.unique(inverse[eligible])}
    first = rng.choice(eligible, n_pairs)
    second = np.array([rng.choice(members[inverse[i]][members[inverse[i]] != i]) for i in first])
    return np.stack([first, second], 1)


def _random_pairs(n: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.integers(0, n, n_pairs)
    b = (a + rng.integers(1, n, n_pairs)) % n
    return np.stack([a, b], 1)


def _leaf_category(text: str) -> str:
    parts = [p.strip() for p in re.split(r"[,>|]", text) if p.strip()]
    return parts[-1].lower() if parts else ""


def _title_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 1)


def semantic_lift(index: SemanticIndex, catalog: Catalog, prefix: int = 2, n_pairs: int = 20000, seed: int = 0) -> dict:
    """Same-leaf-category rate and title-word Jaccard of same-prefix pairs, divided by random pairs'."""
    rng = np.random.default_rng(seed)
    same = _pairs_same_group(index.codes[:, :prefix], n_pairs, rng)
    rand = _random_pairs(index.n_items, n_pairs, rng)
    out: dict[str, float] = {}
    cats = [_leaf_category(item.get("categories", "")) for item in catalog.items]
    if len(same) and sum(bool(c) for c in cats) > 0.5 * len(cats):

        def rate(pairs: np.ndarray) -> float:
            return float(np.mean([bool(cats[a]) and cats[a] == cats[b] for a, b in pairs]))

        out["semantic/same_category_prefix"] = rate(same)
        out["semantic/same_category_random"] = rate(rand)
        out["semantic/category_lift"] = out["semantic/same_category_prefix"] / max(
            out["semantic/same_category_random"], 1e-9
        )
    words = [_title_words(item.get("title", "")) for item in catalog.items]
    if len(same) and any(words):

        def jaccard(pairs: np.ndarray) -> float:
            return float(np.mean([len(words[a] & words[b]) / max(len(words[a] | words[b]), 1) for a, b in pairs]))

        out["semantic/title_jaccard_prefix"] = jaccard(same)
        out["semantic/title_jaccard_random"] = jaccard(rand)
        out["semantic/title_jaccard_lift"] = out["semantic/title_jaccard_prefix"] / max(
            out["semantic/title_jaccard_random"], 1e-9
        )
    return out


def index_report(
    index: SemanticIndex,
    catalog: Catalog | None = None,
    emb: np.ndarray | None = None,
    codes_before: np.ndarray | None = None,
    quant_errors: list[float] | None = None,
    seconds: float | None = None,
) -> dict[str, float]:
    """Flat ``name -> value`` dict.

    Collision rate "before" is of the quantiser's own codes; quantisation error is of the final codes
    without a collision-rank level (so ``reassign``'s moves count).
    """
    final = index.codes[:, : index.meta.get("base_levels", index.depth)]  # without a collision-rank level
    lengths = index.lengths()
    report: dict[str, float] = {
        "items": index.n_items,
        "levels": index.depth,
        "id_len_min": int(lengths.min()),
        "id_len_max": int(lengths.max()),
        "collision_rate/before": float(index.meta.get("collision_rate_before", collision_rate(final)))
        if codes_before is None
        else collision_rate(codes_before),
        "collision_rate/after": collision_rate(index.codes),
    }
    for level, size in enumerate(index.codebook_sizes):
        for name, value in level_stats(index.codes[:, level], size).items():
            report[f"level{level + 1}/{name}"] = value
    if emb is not None:
        errors = residual_errors(final, emb)
        total = float(((emb - emb.mean(0)) ** 2).sum(1).mean())
        for level, err in enumerate(errors):
            report[f"quant_error/level{level + 1}"] = err
        report["quant_error/relative"] = errors[-1] / max(total, 1e-12)
    if quant_errors:
        report["quant_error/quantiser"] = quant_errors[-1]
    if seconds is not None:
        report["build_seconds"] = seconds
    if catalog is not None:
        report.update(semantic_lift(index, catalog))
        for prefix in range(1, max(index.depth - 1, 1) + 1):
            report.update(sequential_prefix_lift(index.codes, train_sequences(catalog), prefix))
    return report


def print_report(report: dict[str, float], title: str = "") -> None:
    print(format_metric_table(report, title=title), flush=True)


def write_report(report: dict[str, float], out: Path, tag: str) -> None:
    """``report.json`` next to the index and the same scalars as TensorBoard events under ``out/tb``."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    with SummaryWriter(str(out / "tb")) as writer:
        for key, value in report.items():
            writer.add_scalar(f"{tag}/{key}", float(value))
