"""Shared evaluation for ID-based baselines: rank the full catalogue, score Recall/NDCG/MRR at 1, 5, 10.

By default nothing is excluded from the ranking, not even the user's history: LC-Rec and GREAM rank the
whole catalogue the same way. With the data module's ``exclude_seen`` the batches carry ``seen`` and
``top_items`` drops those items before the top-k, as the LLM stages' search does, so both protocols
compare like with like.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import lightning as L
import torch

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.metrics import ranking_metrics

METRIC_KS = (1, 5, 10)


def top_items(scores: torch.Tensor, k: int, seen: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, k]`` indices of the best scores per row (fewer columns if fewer items), never one of the
    row's ``seen`` indices (``-1`` padded) when given; ``-1`` where a row has no unseen item left."""
    if seen is None or not seen.numel():
        return scores.topk(min(k, scores.shape[-1]), dim=-1).indices
    scores = scores.clone()
    rows = torch.arange(len(scores), device=scores.device).unsqueeze(1).expand_as(seen)
    keep = seen >= 0
    scores[rows[keep], seen[keep]] = float("-inf")
    values, indices = scores.topk(min(k, scores.shape[-1]), dim=-1)
    return torch.where(torch.isfinite(values), indices, torch.full_like(indices, -1))


class FullRankingModule(L.LightningModule, ABC):
    """Base for baselines whose ``rank(batch, k)`` returns each user's top-k catalogue indices.

    Args:
        log_prefix: stage name in log keys, e.g. ``sasrec`` -> ``sasrec/val/ndcg@10``.
        top_k: length of the ranked list scored by the metrics (GREAM returns 10 beams).
    """

    def __init__(self, log_prefix: str, top_k: int = 10) -> None:
        super().__init__()
        if top_k < max(METRIC_KS):
            raise ValueError(f"top_k must be >= {max(METRIC_KS)} to score @{max(METRIC_KS)}, got {top_k}")
        self.top_k = top_k
        self.val_metrics = ranking_metrics(METRIC_KS, prefix=f"{log_prefix}/val/")
        self.test_metrics = ranking_metrics(METRIC_KS, prefix=f"{log_prefix}/test/")

    @abstractmethod
    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """Top-``k`` catalogue indices per user, best first: ``[B, k]`` (fewer columns if fewer items)."""

    def attached_catalog(self) -> Catalog | None:
        """The catalog of the trainer's datamodule, or None when the model runs without one."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        return datamodule.load() if datamodule is not None else None

    def resolve_n_items(self, catalog: Catalog | None) -> int:
        """Catalogue size from the datamodule (recorded in hparams) or, without one, from hparams."""
        expected = self.hparams.n_items
        if catalog is None:
            if expected is None:
                raise ValueError(f"{type(self).__name__} needs n_items or a trainer whose datamodule has load()")
            return expected
        if expected is not None and expected != catalog.n_items:
            raise DataError(
                f"{type(self).__name__} was built for {expected} items but {catalog.name} has {catalog.n_items}"
            )
        self.hparams.n_items = catalog.n_items
        return catalog.n_items

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        items = self.rank(batch, self.top_k)
        self.val_metrics.update(items, batch["target"])
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=False)
        return {"user": batch["user"], "target": batch["target"], "items": items}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        items = self.rank(batch, self.top_k)
        self.test_metrics.update(items, batch["target"])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        return {"user": batch["user"], "target": batch["target"], "items": items}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"user": batch["user"], "items": self.rank(batch, self.top_k)}
