"""Full-ranking metrics for one ground-truth item per user, as DDP-correct torchmetrics.

Each metric takes ``preds``: a ``[B, L]`` tensor of ranked item indices (best first; -1 pads a
shorter list) and ``target``: ``[B]`` true item indices. Sums and counts are ``dist_reduce_fx="sum"``
states, so the value over several processes equals the value over all users in one process.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric, MetricCollection


def hit_rank(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of the target in each ranked list, or -1 when it is absent."""
    if preds.dim() != 2 or target.dim() != 1 or preds.shape[0] != target.shape[0]:
        raise ValueError(f"expected preds [B, L] and target [B], got {tuple(preds.shape)} and {tuple(target.shape)}")
    hits = preds == target.unsqueeze(1)
    first = hits.float().argmax(dim=1)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, -1))


def recall_at_k(rank: torch.Tensor, k: int) -> torch.Tensor:
    return ((rank >= 0) & (rank < k)).float()


def ndcg_at_k(rank: torch.Tensor, k: int) -> torch.Tensor:
    gain = 1.0 / torch.log2(rank.clamp(min=0).float() + 2.0)
    return torch.where((rank >= 0) & (rank < k), gain, torch.zeros_like(gain))


def mrr_at_k(rank: torch.Tensor, k: int) -> torch.Tensor:
    rr = 1.0 / (rank.clamp(min=0).float() + 1.0)
    return torch.where((rank >= 0) & (rank < k), rr, torch.zeros_like(rr))


class _RankMetric(Metric):
    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    _fn = staticmethod(recall_at_k)

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        rank = hit_rank(preds, target)
        self.total += self._fn(rank, self.k).sum().to(torch.float64)
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(math.nan)
        return (self.total / self.count).float()


class RecallAtK(_RankMetric):
    """Share of users whose target is in the top k (= Hit@k with one target)."""

    _fn = staticmethod(recall_at_k)


class NDCGAtK(_RankMetric):
    """1/log2(rank+2) for a 0-based rank inside the top k, else 0 (IDCG = 1)."""

    _fn = staticmethod(ndcg_at_k)


class MRRAtK(_RankMetric):
    """Reciprocal rank inside the top k, else 0."""

    _fn = staticmethod(mrr_at_k)


def ranking_metrics(ks: tuple[int, ...] = (1, 5, 10), prefix: str = "") -> MetricCollection:
    """Recall/NDCG/MRR at each k, keyed ``recall@k``, ``ndcg@k``, ``mrr@k``."""
    metrics: dict[str, Metric] = {}
    for k in ks:
        metrics[f"recall@{k}"] = RecallAtK(k)
        metrics[f"ndcg@{k}"] = NDCGAtK(k)
        metrics[f"mrr@{k}"] = MRRAtK(k)
    # No compute groups: torchmetrics merges metrics whose states are equal after the first update
    # (e.g. recall@1 and recall@5 when a sanity-check batch has no hits), and they then share state.
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)
