"""Balanced residual k-means: ours (Sinkhorn prices + deferred acceptance + swaps) vs k-means-constrained.

GREAM's official code runs ``k_means_constrained.KMeansConstrained`` (min-cost flow per Lloyd step) at
every level. This script runs both on the same embeddings (default: Games MiniLM title embeddings,
16,859 x 384) and prints time, the largest cluster-size deviation from n/K, and quantisation error
(mean squared residual after the last level).

Two comparisons, because the reference is slow at full scale:
  * full data, first level only (K=256): ``--full_levels`` levels of ours vs the reference's first level;
  * a random subset (default 2,000 items, K=32, 3 levels), every level for both.

    OMP_NUM_THREADS=1 python benchmarks/bench_rqkmeans.py --data ../shared/data/amazon18_games
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gream_lit.data.readers import load_catalog
from gream_lit.indexing.embed import build_encoder, embed_items, load_embeddings
from gream_lit.indexing.kmeans import residual_kmeans


def reference_rqkmeans(emb: np.ndarray, levels: int, k: int, n_init: int, max_iter: int, seed: int) -> dict:
    """GREAM's rkmeans_constrained loop with k-means-constrained (size n//K-1 .. n//K+1)."""
    from k_means_constrained import KMeansConstrained

    r = emb.astype(np.float64).copy()
    n = len(r)
    codes = []
    start = time.perf_counter()
    for level in range(levels):
        km = KMeansConstrained(
            n_clusters=k,
            size_min=max(1, n // k - 1),
            size_max=n // k + 1,
            n_init=n_init,
            max_iter=max_iter,
            tol=1e-4,
            random_state=seed + level,
            n_jobs=1,
        ).fit(r)
        codes.append(km.labels_)
        r = r - km.cluster_centers_[km.labels_]
    return {"seconds": time.perf_counter() - start, "codes": np.stack(codes, 1), "error": float((r**2).sum(1).mean())}


def ours_rqkmeans(emb: np.ndarray, levels: int, k: int, n_init: int, max_iter: int, seed: int) -> dict:
    rq = residual_kmeans(emb, levels, k, balanced=True, seed=seed, max_iter=max_iter, n_init=n_init)
    return {"level_seconds": rq.info["level_seconds"], "codes": rq.codes, "errors": rq.errors}


def max_deviation(codes: np.ndarray, k: int) -> float:
    """Largest |cluster size - n/K| over all levels."""
    n = len(codes)
    return max(float(np.abs(np.bincount(codes[:, lv], minlength=k) - n / k).max()) for lv in range(codes.shape[1]))


def compare(name: str, emb: np.ndarray, k: int, levels: int, ref_levels: int, args: argparse.Namespace) -> list[str]:
    """Rows for ours (all levels, and its first ``ref_levels``) and the reference over ``ref_levels``."""
    ours = ours_rqkmeans(emb, levels, k, args.n_init, args.max_iter, args.seed)
    ref = reference_rqkmeans(emb, ref_levels, k, args.n_init, args.max_iter, args.seed)
    ours_sec = sum(ours["level_seconds"][:ref_levels])
    ours_err = ours["errors"][ref_levels - 1]
    rows = [
        (f"{name} ours {levels} lv", sum(ours["level_seconds"]), max_deviation(ours["codes"], k), ours["errors"][-1])
    ]
    if ref_levels != levels:
        rows.append(
            (f"{name} ours {ref_levels} lv", ours_sec, max_deviation(ours["codes"][:, :ref_levels], k), ours_err)
        )
    rows.append((f"{name} k-m-c {ref_levels} lv", ref["seconds"], max_deviation(ref["codes"], k), ref["error"]))
    lines = [f"{r[0]:<36} {r[1]:>10.1f} {r[2]:>11.2f} {r[3]:>12.5f}" for r in rows]
    err = ours_err / ref["error"] - 1
    lines.append(
        f"  -> {ref_levels} level(s): k-means-constrained / ours time = {ref['seconds'] / ours_sec:.1f}x; "
        f"our error {err:+.2%} vs reference ({'within' if err <= 0.05 else 'NOT within'} 5%)"
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/amazon18_games")
    p.add_argument("--embeddings", default="", help=".npy instead of embedding the titles with MiniLM")
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--full_ref_levels", type=int, default=1, help="levels the reference runs on the full data")
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--subset_k", type=int, default=32)
    p.add_argument("--subset_levels", type=int, default=3)
    p.add_argument("--max_iter", type=int, default=30, help="Lloyd iterations for both (GREAM: 100)")
    p.add_argument("--n_init", type=int, default=1, help="restarts for both (GREAM: 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip_full", action="store_true")
    args = p.parse_args()

    if args.embeddings:
        emb = load_embeddings(args.embeddings)
    else:
        catalog = load_catalog(args.data)
        emb = embed_items(
            catalog, build_encoder("sentence-transformers", "all-MiniLM-L6-v2"), ["title"], ".cache/embeddings"
        )
    emb = emb.astype(np.float32)
    rng = np.random.default_rng(args.seed)
    sub = emb[np.sort(rng.choice(len(emb), min(args.subset, len(emb)), replace=False))]

    header = f"{'run':<36} {'seconds':>10} {'max|sz-n/K|':>11} {'quant err':>12}"
    lines = [f"embeddings {emb.shape}, max_iter={args.max_iter}, n_init={args.n_init}", header, "-" * len(header)]
    lines += compare(
        f"subset n={len(sub)} K={args.subset_k}", sub, args.subset_k, args.subset_levels, args.subset_levels, args
    )
    print("\n".join(lines), flush=True)
    if not args.skip_full:
        lines = compare(f"full n={len(emb)} K={args.k}", emb, args.k, args.levels, args.full_ref_levels, args)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
