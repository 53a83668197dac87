"""K-means and size-balanced k-means in torch, and residual quantisation built from them.

GREAM's official code balances every level with ``k-means-constrained`` (a min-cost-flow solve per
Lloyd iteration, cluster sizes n/K ± 1, docs/gream_spec.md §4.2), which takes minutes to hours at catalogue scale.
``balanced_assign`` gets the same guarantee much faster: Sinkhorn dual prices make the nearest-centroid
choice nearly balanced, vectorised deferred acceptance with capacity ceil(n/K) rounds it, the cheapest
moves into clusters still below floor(n/K) complete it, and pairwise swaps / single moves that keep the
sizes repair what rounding lost. ``kmeans(balanced=True)`` runs plain Lloyd steps first and warm-starts
each balanced step's prices from the previous one, so every step after the first is a few cheap passes.
Only the assignment changes; centroid updates are plain means.
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


def kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator, sample_per_cluster: int = 32) -> torch.Tensor:
    """k-means++ seeding (one candidate per step) on a random sample of ``sample_per_cluster * k`` points.

    Seeding costs one pass over the points per centre; a sample cuts that while Lloyd steps still see all.
    """
    if x.shape[0] > sample_per_cluster * k:
        x = x[torch.randperm(x.shape[0], generator=gen)[: sample_per_cluster * k]]
    n = x.shape[0]
    sq = (x * x).sum(1)
    idx = torch.randint(n, (1,), generator=gen)
    chosen = [idx]
    closest = (sq - 2.0 * x @ x[idx].squeeze(0) + sq[idx]).clamp_min_(0.0)
    for _ in range(1, k):
        total = closest.sum()
        probs = closest / total if total > 0 else torch.full_like(closest, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=gen)
        chosen.append(idx)
        torch.minimum(closest, (sq - 2.0 * x @ x[idx].squeeze(0) + sq[idx]).clamp_min_(0.0), out=closest)
    return x[torch.cat(chosen)]


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


def _deferred_acceptance(adj: torch.Tensor, cap: int, max_rounds: int = 30) -> torch.Tensor:
    """Item-proposing deferred acceptance (Gale-Shapley) with cluster capacity ``cap``, vectorised.

    Every unassigned item proposes to its cheapest cluster that has not rejected it; every cluster keeps
    its ``cap`` cheapest proposers. With near-balancing prices most items settle in a few rounds but a
    long tail of single rejection chains follows, so after ``max_rounds`` the few items still free take
    their cheapest cluster with room, one by one (refinement repairs what that costs).
    """
    n, k = adj.shape
    work = adj.clone()
    labels = torch.full((n,), -1, dtype=torch.long)
    free = torch.arange(n)
    for _ in range(max_rounds):
        if not len(free):
            return labels
        labels[free] = work[free].argmin(1)
        # only clusters that just received proposals can have to reject someone
        hit = torch.zeros(k, dtype=torch.bool)
        hit[labels[free]] = True
        cand = torch.nonzero(hit[labels.clamp_min(0)] & (labels >= 0)).flatten()
        by_key = cand[adj[cand, labels[cand]].argsort()]
        ordered = by_key[labels[by_key].argsort(stable=True)]
        counts = torch.bincount(labels[ordered], minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(ordered)) - starts[labels[ordered]]
        free = ordered[rank >= cap]
        work[free, labels[free]] = torch.inf
        labels[free] = -1
    sizes = torch.bincount(labels[labels >= 0], minlength=k)
    for i in free.tolist():
        c = int(adj[i].masked_fill(sizes >= cap, torch.inf).argmin())
        labels[i] = c
        sizes[c] += 1
    return labels


def _first_occurrence(v: torch.Tensor) -> torch.Tensor:
    """Mask of the entries of ``v`` whose value has not appeared earlier in ``v``."""
    _, inv = torch.unique(v, return_inverse=True)
    pos = torch.arange(len(v))
    first = torch.full((int(inv.max()) + 1,), len(v), dtype=torch.long).scatter_reduce_(0, inv, pos, "amin")
    return first[inv] == pos


def _fill_underfull(cost: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Move the cheapest items from clusters above floor(n/K) into clusters below it.

    Each round every underfull cluster takes its cheapest incoming item, at most one item leaving any
    source cluster, so no source drops below the floor; afterwards all sizes are floor or ceil(n/K).
    """
    n, k = cost.shape
    lo, _ = size_bounds(n, k)
    labels = labels.clone()
    rows = torch.arange(n)
    while True:
        sizes = torch.bincount(labels, minlength=k)
        under = torch.nonzero(sizes < lo).flatten()
        if not len(under):
            return labels
        donor = sizes[labels] > lo
        delta = cost[:, under] - cost[rows, labels][:, None]
        delta[~donor] = torch.inf
        pick = delta.argmin(0)
        gain = delta[pick, torch.arange(len(under))]
        order = gain.argsort()
        pick, under = pick[order], under[order]
        keep = _first_occurrence(pick) & _first_occurrence(labels[pick])
        labels[pick[keep]] = under[keep]


def _refine(cost: torch.Tensor, labels: torch.Tensor, rounds: int = 30) -> torch.Tensor:
    """Improving pairwise swaps between clusters, and moves from a ceil- to a floor-sized cluster."""
    n, k = cost.shape
    lo, hi = size_bounds(n, k)
    labels = labels.clone()
    min_gain = 1e-7 * float(cost.abs().mean())
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
            if not score[a, b] > min_gain:
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
    n, k = cost.shape
    prices = sinkhorn_prices(cost, prices, iters=sinkhorn_iters)
    labels = _deferred_acceptance(cost - prices[None, :], size_bounds(n, k)[1])
    labels = _fill_underfull(cost, labels)
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


def _lloyd(
    x: torch.Tensor, centroids: torch.Tensor, iters: int, tol: float, balanced: bool, prices: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Lloyd steps until the inertia improves by less than ``tol`` (relative); returns centroids, prices, steps."""
    k = centroids.shape[0]
    prev, it = math.inf, 0
    for it in range(1, iters + 1):
        d = sq_dists(x, centroids)
        if balanced:
            # Cheap assignments while centroids move: warm-started prices, no swap refinement.
            labels, prices = balanced_assign(d, prices, sinkhorn_iters=5 if prices is None else 1, refine_rounds=0)
        else:
            labels = d.argmin(1)
            _fill_empty(x, centroids, labels, d)
        inertia = float(d.gather(1, labels[:, None]).mean())
        counts = torch.bincount(labels, minlength=k).clamp_min(1)
        centroids = torch.zeros_like(centroids).index_add_(0, labels, x) / counts[:, None]
        if it > 1 and prev - inertia <= tol * prev:
            break
        prev = inertia
    return centroids, prices, it


def kmeans(
    x: torch.Tensor,
    k: int,
    balanced: bool = False,
    max_iter: int = 30,
    tol: float = 1e-4,
    seed: int = 0,
    n_init: int = 1,
) -> KMeansResult:
    """Lloyd's k-means (nearest centroid or size-balanced assignment); best of ``n_init`` seeded runs.

    Balanced runs first move the centroids with plain Lloyd steps (an argmin each, cheap) for up to half
    of ``max_iter``, then spend the rest on balanced steps, which start close to their fixed point.
    """
    _check_input(x, k)
    x = x.float()
    best: KMeansResult | None = None
    for run in range(n_init):
        gen = torch.Generator().manual_seed(seed * 1000 + run)
        centroids = kmeans_pp(x, k, gen)
        plain_iters = max_iter // 2 if balanced else max_iter
        centroids, prices, it = _lloyd(x, centroids, plain_iters, tol, False, None)
        if balanced:
            centroids, prices, extra = _lloyd(x, centroids, max_iter - it, tol, True, prices)
            it += extra
        final_d = sq_dists(x, centroids)
        if balanced:
            labels, _ = balanced_assign(
                final_d, prices, sinkhorn_iters=3 if prices is not None else 30, refine_rounds=50
            )
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
            level + 1,
            levels,
            k,
            res.iterations,
            errors[-1],
            seconds[-1],
        )
    return ResidualQuantization(np.stack(codes, 1), cents, errors, last_cost, balanced, {"level_seconds": seconds})
