"""Balanced / plain k-means and residual quantisation: bounds, hand-checked assignments, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gream_lit.data.catalog import DataError
from gream_lit.indexing.kmeans import (
    _deferred_acceptance,
    _fill_underfull,
    balanced_assign,
    kmeans,
    kmeans_pp,
    residual_kmeans,
    size_bounds,
)


@pytest.mark.parametrize("n,k,dim", [(100, 7, 5), (64, 8, 3), (257, 16, 8), (33, 32, 4)])
def test_balanced_sizes_within_bounds(n: int, k: int, dim: int) -> None:
    x = torch.from_numpy(np.random.default_rng(n).normal(size=(n, dim)).astype(np.float32))
    x[: n // 2] += 3.0  # skewed data, so plain nearest-centroid assignment would be unbalanced
    res = kmeans(x, k, balanced=True, max_iter=5, seed=1)
    sizes = torch.bincount(res.labels, minlength=k)
    lo, hi = size_bounds(n, k)
    assert int(sizes.min()) >= lo and int(sizes.max()) <= hi
    assert int(sizes.min()) >= n // k - 1 and int(sizes.max()) <= n // k + 1  # GREAM's k-means-constrained bounds


def test_balanced_assign_picks_the_cheapest_balanced_split() -> None:
    # Everyone prefers cluster 0; moving items 1 and 3 costs least (1 + 2).
    cost = torch.tensor([[0.0, 10.0], [0.0, 1.0], [0.0, 5.0], [0.0, 2.0]])
    labels, _ = balanced_assign(cost)
    assert labels.tolist() == [0, 1, 0, 1]


def test_plain_kmeans_finds_separated_blobs() -> None:
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centers.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=torch.Generator().manual_seed(0))
    res = kmeans(x, 3, seed=0)
    groups = res.labels.view(3, 20)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 3
    assert res.inertia < 0.1


def test_residual_kmeans_error_shrinks_each_level() -> None:
    emb = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    rq = residual_kmeans(emb, levels=3, codebook_size=4, balanced=True, seed=3, max_iter=5)
    assert rq.codes.shape == (120, 3) and rq.last_cost.shape == (120, 4)
    assert rq.errors[0] > rq.errors[1] > rq.errors[2]
    for level in range(3):
        assert np.bincount(rq.codes[:, level], minlength=4).tolist() == [30, 30, 30, 30]


def test_same_seed_same_codes() -> None:
    emb = np.random.default_rng(1).normal(size=(80, 5)).astype(np.float32)
    a = residual_kmeans(emb, 2, 8, seed=7, max_iter=4)
    b = residual_kmeans(emb, 2, 8, seed=7, max_iter=4)
    assert np.array_equal(a.codes, b.codes)


def test_nan_embeddings_are_rejected() -> None:
    emb = np.ones((10, 3), dtype=np.float32)
    emb[4, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        residual_kmeans(emb, 2, 2)


def test_fewer_items_than_codes_is_an_error() -> None:
    with pytest.raises(DataError, match="5 items into 8 clusters"):
        residual_kmeans(np.random.default_rng(0).normal(size=(5, 3)), 2, 8)


def test_level_count_must_match_codebook_sizes() -> None:
    with pytest.raises(DataError, match="3 levels but 2 codebook sizes"):
        residual_kmeans(np.zeros((10, 2)), 3, [2, 2])


def test_deferred_acceptance_keeps_the_cheapest_proposers() -> None:
    # All three prefer cluster 0 (capacity 2); item 1 loses it, being the costliest there, and takes cluster 1.
    adj = torch.tensor([[0.0, 5.0, 9.0], [2.0, 3.0, 9.0], [1.0, 8.0, 9.0]])
    assert _deferred_acceptance(adj, cap=2).tolist() == [0, 1, 0]


def test_deferred_acceptance_round_cap_still_respects_capacity() -> None:
    adj = torch.from_numpy(np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32))
    adj[:, 0] -= 10.0  # everyone wants cluster 0, so long rejection chains
    labels = _deferred_acceptance(adj, cap=10, max_rounds=1)
    assert torch.bincount(labels, minlength=5).tolist() == [10] * 5


def test_fill_underfull_moves_the_cheapest_items() -> None:
    # Sizes 3/1/0 with floor 1: cluster 2 takes item 1 (move cost 1), not item 0 (2) or 2 (4).
    cost = torch.tensor([[0.0, 9.0, 2.0], [0.0, 9.0, 1.0], [0.0, 9.0, 4.0], [9.0, 0.0, 9.0]])
    labels = _fill_underfull(cost, torch.tensor([0, 0, 0, 1]))
    assert labels.tolist() == [0, 2, 0, 1]


def test_kmeans_pp_sample_seeds_from_data_points() -> None:
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32))
    c = kmeans_pp(x, 5, torch.Generator().manual_seed(0), sample_per_cluster=10)
    assert c.shape == (5, 4) and all(bool((x == row).all(1).any()) for row in c)
