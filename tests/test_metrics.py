"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from gream_lit.metrics import MRRAtK, NDCGAtK, RecallAtK, hit_rank, ranking_metrics


def _value(metric_cls, k: int, preds: list[list[int]], target: list[int]) -> float:
    metric = metric_cls(k)
    metric.update(torch.tensor(preds), torch.tensor(target))
    return metric.compute().item()


def test_hit_at_rank_one_scores_one_everywhere():
    preds, target = [[7, 3, 2]], [7]
    for cls in (RecallAtK, NDCGAtK, MRRAtK):
        assert _value(cls, 1, preds, target) == pytest.approx(1.0)


def test_hit_at_rank_k_counts_at_k_but_not_at_k_minus_one():
    preds, target = [[1, 2, 3, 4, 5]], [5]
    assert _value(RecallAtK, 5, preds, target) == 1.0
    assert _value(NDCGAtK, 5, preds, target) == pytest.approx(1 / math.log2(6))
    assert _value(MRRAtK, 5, preds, target) == pytest.approx(1 / 5)
    assert _value(RecallAtK, 4, preds, target) == 0.0
    assert _value(NDCGAtK, 4, preds, target) == 0.0


def test_target_outside_the_list_scores_zero():
    for cls in (RecallAtK, NDCGAtK, MRRAtK):
        assert _value(cls, 3, [[1, 2, 3]], [9]) == 0.0


def test_k_larger_than_the_list():
    preds, target = [[4, 8, 6]], [6]
    assert _value(RecallAtK, 10, preds, target) == 1.0
    assert _value(NDCGAtK, 10, preds, target) == pytest.approx(0.5)
    assert _value(MRRAtK, 10, preds, target) == pytest.approx(1 / 3)


def test_padding_never_matches_and_does_not_shift_ranks():
    preds = torch.tensor([[-1, -1, -1], [5, -1, -1], [2, 5, -1]])
    assert hit_rank(preds, torch.tensor([0, 5, 5])).tolist() == [-1, 0, 1]
    # users: miss, hit at rank 1 (gain 1), hit at rank 2 (gain 1/log2(3))
    assert _value(NDCGAtK, 10, preds.tolist(), [0, 5, 5]) == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_mean_over_users():
    preds, target = [[1, 2], [3, 4], [5, 6], [7, 8]], [1, 4, 9, 9]
    assert _value(RecallAtK, 2, preds, target) == pytest.approx(0.5)
    assert _value(MRRAtK, 2, preds, target) == pytest.approx((1 + 0.5) / 4)


def test_two_process_state_sum_equals_one_process():
    """What DDP's sum-reduction does: add each state over ranks, then compute once."""
    preds = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 3, 2], [9, 9, 9]])
    target = torch.tensor([2, 4, 1, 2, 0])
    for cls in (RecallAtK, NDCGAtK, MRRAtK):
        whole, rank0, rank1, merged = cls(3), cls(3), cls(3), cls(3)
        whole.update(preds, target)
        rank0.update(preds[:2], target[:2])
        rank1.update(preds[2:], target[2:])
        for name, reduce in merged._reductions.items():
            assert reduce is not None and reduce.__name__ == "dim_zero_sum", (name, reduce)
            setattr(merged, name, getattr(rank0, name) + getattr(rank1, name))
        merged._update_count = rank0._update_count + rank1._update_count
        assert merged.compute().item() == pytest.approx(whole.compute().item())


def test_ranking_metrics_keys_and_empty_and_bad_shapes():
    metrics = ranking_metrics((1, 5), prefix="sasrec/val/")
    assert sorted(metrics.keys()) == sorted(f"sasrec/val/{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in (1, 5))
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(RecallAtK(5).compute().item())
    with pytest.raises(ValueError, match="k must be >= 1"):
        RecallAtK(0)
    with pytest.raises(ValueError, match="expected preds"):
        hit_rank(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_collection_keeps_metrics_apart_after_a_first_update_without_hits():
    """torchmetrics compute groups would merge @1 and @5 states after an all-miss first batch."""
    from gream_lit.metrics import ranking_metrics

    metrics = ranking_metrics((1, 5))
    metrics.update(torch.tensor([[0, 1, 2, 3, 4]]), torch.tensor([7]))
    metrics.update(torch.tensor([[0, 9, 2, 3, 4], [9, 1, 2, 3, 4]]), torch.tensor([9, 9]))
    out = metrics.compute()
    assert out["recall@1"].item() == pytest.approx(1 / 3)
    assert out["recall@5"].item() == pytest.approx(2 / 3)
    assert out["mrr@5"].item() == pytest.approx((1 / 2 + 1) / 3)
