"""MostPop: recommend the items bought most often in the training parts (``seq[:-2]``) to everyone."""

from __future__ import annotations

import torch

from gream_lit.baselines.ranking import FullRankingModule, top_items
from gream_lit.data.split import train_sequences


def popularity_ranking(sequences: list[list[int]], n_items: int) -> torch.Tensor:
    """All item indices by descending interaction count; ties go to the lower index (stable sort)."""
    counts = torch.zeros(n_items, dtype=torch.long)
    for seq in sequences:
        counts += torch.bincount(torch.tensor(seq, dtype=torch.long), minlength=n_items)
    return torch.sort(counts, descending=True, stable=True).indices


class MostPop(FullRankingModule):
    """Popularity baseline with nothing to optimise.

    The ranking is counted in ``configure_model`` from the datamodule's catalog and kept as a buffer,
    so checkpoints carry it. ``fit`` runs one no-op epoch (manual optimisation, no optimiser) so the
    usual validate -> checkpoint -> test path works unchanged.

    Args:
        n_items: catalogue size; filled in from the datamodule, stored for ``load_from_checkpoint``.
    """

    def __init__(self, n_items: int | None = None, log_prefix: str = "mostpop", top_k: int = 10) -> None:
        super().__init__(log_prefix, top_k)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.register_buffer("ranking", torch.arange(n_items) if n_items is not None else None)

    def configure_model(self) -> None:
        catalog = self.attached_catalog()
        n_items = self.resolve_n_items(catalog)
        if catalog is not None:
            self.ranking = popularity_ranking(train_sequences(catalog), n_items)

    def configure_optimizers(self) -> None:
        return None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        return None

    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        rows = batch["history"].shape[0]
        if batch.get("seen") is None:
            return self.ranking[:k].expand(rows, -1)
        score = torch.empty(len(self.ranking), device=self.ranking.device)  # higher for more popular items
        score[self.ranking] = -torch.arange(len(self.ranking), dtype=score.dtype, device=score.device)
        return top_items(score.expand(rows, -1), k, batch["seen"])
