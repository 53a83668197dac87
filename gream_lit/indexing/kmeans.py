"""K-means and size-balanced k-means in torch, and residual quantisation built from them.

GREAM's official code balances every level with ``k-means-constrained`` (a min-cost-flow solve per
Lloyd iteration, cluster sizes n/K ± 1, spec §4.2), which takes minutes to hours at catalogue scale.
``balanced_assign`` gets the same guarantee much faster: Sinkhorn dual prices make the nearest-centroid
choice nearly balanced, a capacity-aware greedy pass rounds it to cluster sizes of exactly
floor(n/K) or ceil(n/K), and pairwise swaps / single moves that keep those sizes repair the greedy's
mistakes. Only the assignment changes; centroid updates are plain means.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gream_lit.data.catalog import DataError

log = logging.getLogger(__name__)


def size_bounds(n: int, k: int) -> tuple[int, int]:
    """Smallest and largest cluster size of a perfectly balanced partition of ``n`` into ``k``."""
    return n // k, -(-n // k)


def sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[n, k]`` squared Euclidean distances."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _check_input(x: torch.Tensor, k: int) -> None:
    if x.ndim != 2:
        raise DataError(f"k-means input must be [n, dim], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError("k-means input contains NaN or inf")
    if k < 1 or x.shape[0] < k:
        raise DataError(f"cannot split {x.shape[0]} items into {k} clusters: need at least as many items as codes")


def kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (greedy-free variant: one candidate per step)."""
    n = x.shape[0]
    centers = [x[torch.randint(n, (1,), generator=gen)]]
    closest = sq_dists(x, centers[0]).squeeze(1)
    for _ in range(1, k):
        probs = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=gen)
        centers.append(x[idx])
        closest = torch.minimum(closest, sq_dists(x, x[idx]).squeeze(1))
    return torch.cat(centers)


def sinkhorn_prices(
    cost: torch.Tensor, g: torch.Tensor | None = None, iters: int = 20, temp: float = 0.05
) -> torch.Tensor:
    """Dual column potentials of entropic OT with uniform marginals: ``argmin(cost - g)`` is near-balanced."""
    n, k = cost.shape
    eps = float(temp * cost.std().clamp_min(1e-12))
    g = torch.zeros(k, dtype=cost.dtype) if g is None else g
    log_a, log_b = -math.log(n), -math.log(k)
    for _ in range(iters):
        f = eps * log_a - eps * torch.logsumexp((g[None, :] - cost) / eps, dim=1)
        g = eps * log_b - eps * torch.logsumexp((f[:, None] - cost) / eps, dim=0)
    return g


def _greedy_round(adj: torch.Tensor) -> torch.Tensor:
    """Assign items, most-regretful first, to their cheapest cluster that still has room.

    Every cluster takes ``lo`` items and exactly ``n - lo*k`` clusters take one more, so the final sizes
    are guaranteed to lie in {lo, hi} whatever the order.
    """
    n, k = adj.shape
    lo, hi = size_bounds(n, k)
    extras = n - lo * k
    top2 = adj.topk(2, dim=1, largest=False).values if k > 1 else torch.cat([adj, adj], 1)
    order = torch.argsort(top2[:, 1] - top2[:, 0], descending=True).tolist()
    prefs = torch.argsort(adj, dim=1).numpy()
    sizes = np.zeros(k, dtype=np.int64)
    labels = np.empty(n, dtype=np.int64)
    for i in order:
        for c in prefs[i]:
            s = sizes[c]
            if s < lo or (s < hi and extras > 0):
                if s >= lo:
                    extras -= 1
                sizes[c] = s + 1
                labels[i] = c
                break
    return torch.from_numpy(labels)


def _refine(cost: torch.Tensor, labels: torch.Tensor, rounds: int = 30) -> torch.Tensor:
    """Improving pairwise swaps between clusters, and moves from a ceil- to a floor-sized cluster."""
    n, k = cost.shape
    lo, hi = size_bounds(n, k)
    labels = labels.clone()
    for _ in range(rounds):
        gain = cost.gather(1, labels[:, None]) - cost  # gain[i, b]: saving if i moved to b
        best = torch.full((k, k), -torch.inf, dtype=cost.dtype)
        best.scatter_reduce_(0, labels[:, None].expand(-1, k), gain, "amax")
        score = best + best.T
        if hi > lo:
            sizes = torch.bincount(labels, minlength=k)
            movable = (sizes[:, None] == hi) & (sizes[None, :] == lo)
            score = torch.where(movable & (best > score), best, score)
        else:
            movable = torch.zeros(k, k, dtype=torch.bool)
        score.fill_diagonal_(-torch.inf)
        changed = False
        while True:
            flat = int(score.argmax())
            a, b = divmod(flat, k)
            if not score[a, b] > 1e-7 * cost.abs().mean():
                break
            in_a = labels == a
            i = int(torch.where(in_a, gain[:, b], -torch.inf).argmax())
            if movable[a, b] and best[a, b] >= best[a, b] + best[b, a]:
                labels[i] = b
            else:
                j = int(torch.where(labels == b, gain[:, a], -torch.inf).argmax())
                labels[i], labels[j] = b, a
            changed = True
            score[[a, b], :] = -torch.inf
            score[:, [a, b]] = -torch.inf
        if not changed:
            break
    return labels


def balanced_assign(
    cost: torch.Tensor, prices: torch.Tensor | None = None, sinkhorn_iters: int = 20, refine_rounds: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with every cluster of size floor(n/K) or ceil(n/K), near-minimal total cost; and the prices."""
    prices = sinkhorn_prices(cost, prices, iters=sinkhorn_iters)
    labels = _greedy_round(cost - prices[None, :])
    labels = _refine(cost, labels, refine_rounds)
    return labels, prices


@dataclass
class KMeansResult:
    labels: torch.Tensor
    centroids: torch.Tensor
    inertia: float  # mean squared distance to the assigned centroid
    iterations: int


def _fill_empty(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, d: torch.Tensor) -> None:
    """Re-seed empty clusters with the points farthest from their centroid (plain k-means only)."""
    counts = torch.bincount(labels, minlength=centroids.shape[0])
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty):
        far = d.gather(1, labels[:, None]).squeeze(1).argsort(descending=True)[: len(empty)]
        centroids[empty] = x[far]
        labels[far] = empty


def kmeans(
    x: torch.Tensor,
    k: int,
    balanced: bool = False,
    max_iter: int = 30,
    tol: float = 1e-4,
    seed: int = 0,
    n_init: int = 1,
) -> KMeansResult:
    """Lloyd's k-means (nearest centroid or size-balanced assignment); best of ``n_init`` seeded runs."""
    _check_input(x, k)
    x = x.float()
    best: KMeansResult | None = None
    for run in range(n_init):
        gen = torch.Generator().manual_seed(seed * 1000 + run)
        centroids = kmeans_pp(x, k, gen)
        prices, prev, it = None, math.inf, 0
        for it in range(1, max_iter + 1):
            d = sq_dists(x, centroids)
            if balanced:
                # Cheap assignments while centroids move; the final one below is refined fully.
                labels, prices = balanced_assign(d, prices, sinkhorn_iters=30 if it == 1 else 5, refine_rounds=2)
            else:
                labels = d.argmin(1)
                _fill_empty(x, centroids, labels, d)
            inertia = float(d.gather(1, labels[:, None]).mean())
            counts = torch.bincount(labels, minlength=k).clamp_min(1)
            centroids = torch.zeros_like(centroids).index_add_(0, labels, x) / counts[:, None]
            if prev - inertia <= tol * max(prev, 1e-12) and it > 1:
                break
            prev = inertia
        final_d = sq_dists(x, centroids)
        if balanced:
            labels, _ = balanced_assign(final_d, prices, sinkhorn_iters=10, refine_rounds=50)
        else:
            labels = final_d.argmin(1)
        inertia = float(final_d.gather(1, labels[:, None]).mean())
        if best is None or inertia < best.inertia:
            best = KMeansResult(labels, centroids, inertia, it)
    return best


@dataclass
class ResidualQuantization:
    """Codes of every level and what collision handling and reports need from the quantiser."""

    codes: np.ndarray  # [n, levels], 0-based
    centroids: list[np.ndarray]
    errors: list[float]  # mean squared norm of the residual left after each level
    last_cost: np.ndarray  # [n, K_last] squared distance of the last level's input to its codewords
    balanced: bool = False
    info: dict = field(default_factory=dict)


def residual_kmeans(
    emb: np.ndarray | torch.Tensor,
    levels: int,
    codebook_size: int | list[int],
    balanced: bool = True,
    seed: int = 42,
    max_iter: int = 30,
    tol: float = 1e-4,
    n_init: int = 1,
) -> ResidualQuantization:
    """Global (not per-parent) k-means of the residuals at each level, as GREAM's rkmeans_constrained does."""
    sizes = [codebook_size] * levels if isinstance(codebook_size, int) else list(codebook_size)
    if len(sizes) != levels:
        raise DataError(f"{levels} levels but {len(sizes)} codebook sizes {sizes}")
    r = torch.as_tensor(np.asarray(emb), dtype=torch.float32).clone()
    _check_input(r, max(sizes))
    codes, cents, errors, seconds = [], [], [], []
    last_cost = None
    for level, k in enumerate(sizes):
        start = time.perf_counter()
        res = kmeans(r, k, balanced=balanced, max_iter=max_iter, tol=tol, seed=seed + level + 1, n_init=n_init)
        if level == levels - 1:
            last_cost = sq_dists(r, res.centroids).numpy()
        codes.append(res.labels.numpy())
        cents.append(res.centroids.numpy())
        r = r - res.centroids[res.labels]
        errors.append(float((r * r).sum(1).mean()))
        seconds.append(time.perf_counter() - start)
        log.info(
            "level %d/%d: K=%d, %d iterations, residual %.5f, %.1fs",
            level + 1, levels, k, res.iterations, errors[-1], seconds[-1],
        )
    return ResidualQuantization(np.stack(codes, 1), cents, errors, last_cost, balanced, {"level_seconds": seconds})
