"""Statistics over per-user results: bootstrap intervals, paired differences, a paired test.

Every function takes per-user values (one number per user, e.g. NDCG@10 of that user) as arrays, so
any metric, any model and any subset of users go through the same code. Paired functions need the
two arrays aligned on the same users (``align``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided ``level`` interval over ``n`` users."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{fmt(self.mean)} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` on the same users: mean difference, its bootstrap interval, paired t-test p-value."""

    diff: Interval
    p_value: float


def fmt(x: float) -> str:
    """4 decimals, or 2 significant digits when that would hide a small non-zero value."""
    if x == 0 or not math.isfinite(x) or abs(x) >= 1e-3:
        return f"{x:.4f}"
    return f"{x:.2g}"


def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, same size) of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-d array of per-user values, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // values.size)  # bound memory: chunk x n indices at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        out[start:stop] = values[rng.integers(0, values.size, size=(stop - start, values.size))].mean(1)
    return out


def bootstrap_interval(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean over users."""
    values = np.asarray(values, dtype=np.float64)
    means = bootstrap_means(values, n_boot, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(values.mean()), float(low), float(high), int(values.size), level)


def paired_t_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test of mean(a - b) = 0; 1.0 when every difference is 0."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise ValueError("a paired test needs at least 2 users")
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(d.size))
    return float(2 * sps.t.sf(abs(t), df=d.size - 1))


def paired_comparison(
    a: np.ndarray, b: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> PairedComparison:
    """Mean of ``a - b`` over the same users with a bootstrap interval, and the paired t-test."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must be aligned on the same users, got {a.shape} and {b.shape}")
    return PairedComparison(bootstrap_interval(a - b, level, n_boot, seed), paired_t_pvalue(a, b))


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The users both results scored (sorted), with each side's values on them."""
    users = sorted(set(a) & set(b))
    return users, np.array([a[u] for u in users], dtype=np.float64), np.array([b[u] for u in users], dtype=np.float64)


def rank_metric(ranks: np.ndarray, name: str) -> np.ndarray:
    """Per-user ``recall@k``, ``ndcg@k`` or ``mrr@k`` from 0-based target ranks (-1 = not in the list)."""
    kind, _, k_text = name.partition("@")
    if kind not in ("recall", "ndcg", "mrr") or not k_text.isdigit():
        raise ValueError(f"unknown per-user metric {name!r}; expected recall@K, ndcg@K or mrr@K")
    ranks = np.asarray(ranks)
    hit = (ranks >= 0) & (ranks < int(k_text))
    safe = np.where(ranks >= 0, ranks, 0).astype(np.float64)
    if kind == "recall":
        gain = np.ones_like(safe)
    elif kind == "ndcg":
        gain = 1.0 / np.log2(safe + 2.0)
    else:
        gain = 1.0 / (safe + 1.0)
    return np.where(hit, gain, 0.0)
