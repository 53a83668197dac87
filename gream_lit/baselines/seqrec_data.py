"""Item-id tensors for ID-based sequential recommenders (MostPop, SASRec) from the leave-one-out split.

Histories are *tokens*: catalogue index + 1, left-padded with 0 to ``max_history`` so the most recent
item always sits in the last column. Targets and labels stay catalogue indices (0-based), the space
the ranking metrics compare in; ``-100`` marks a label to ignore (the cross-entropy default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, StackDataset

from gream_lit.data.catalog import DataError
from gream_lit.data.datamodule import CatalogDataModule
from gream_lit.data.padding import pad
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.split import Sample, train_sequences

PAD = 0
IGNORE = -100


def left_pad(items: Sequence[int], length: int) -> list[int]:
    """The last ``length`` items as tokens (index + 1), left-padded with ``PAD``."""
    tokens = [i + 1 for i in items[-length:]]
    return [PAD] * (length - len(tokens)) + tokens


def autoregressive_example(sequence: Sequence[int], length: int) -> tuple[list[int], list[int]]:
    """Inputs ``seq[:-1]`` and next-item labels ``seq[1:]``, both cut to the last ``length`` and padded.

    Every position predicts its successor, so one user's sequence trains all its prefixes at once.
    """
    inputs = left_pad(sequence[:-1], length)
    labels = list(sequence[1:])[-length:]
    return inputs, [IGNORE] * (length - len(labels)) + labels


def eval_dataset(samples: Sequence[Sample], length: int, seen: Sequence[Sequence[int]] | None = None) -> StackDataset:
    """Rows of ``history`` [length] tokens, ``target`` catalogue index and ``user``; with ``seen`` (per
    sample, the items not to recommend) also ``seen`` catalogue indices, ``-1`` padded."""
    columns = {
        "history": torch.tensor([left_pad(s.history, length) for s in samples], dtype=torch.long).view(-1, length),
        "target": torch.tensor([s.target for s in samples], dtype=torch.long),
        "user": torch.tensor([s.user for s in samples], dtype=torch.long),
    }
    if seen is not None:
        columns["seen"] = pad([list(row) for row in seen], -1) if samples else torch.zeros((0, 0), dtype=torch.long)
    return StackDataset(**columns)


def train_dataset(sequences: Sequence[Sequence[int]], length: int, name: str = "catalog") -> StackDataset:
    """One autoregressive row per user whose training part has at least two items."""
    rows = [autoregressive_example(seq, length) for seq in sequences if len(seq) >= 2]
    if not rows:
        raise DataError(f"{name}: no user has two or more training items, so there is no next item to learn")
    inputs, labels = zip(*rows)
    return StackDataset(
        history=torch.tensor(inputs, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
    )


class SeqRecDataModule(CatalogDataModule):
    """Left-padded item-id batches for ID-based sequential recommenders.

    Train batches: ``history`` [B, L] tokens and ``labels`` [B, L] next items (``seq[:-2]`` of each user
    as one sequence). Valid/test/predict batches: ``history`` [B, L], ``target`` [B], ``user`` [B],
    with ``L = max_history``, and ``seen`` [B, H] with ``exclude_seen``.
    """

    def build_datasets(self, stage: str | None) -> None:
        if stage in ("fit", None):
            self.train_set = train_dataset(train_sequences(self.catalog), self.max_history, self.catalog.name)
        if stage in ("fit", "validate", None):
            self.valid_set = self._eval_dataset(self.eval_samples("valid"))
        if stage in ("test", "predict", None):
            self.test_set = self._eval_dataset(self.eval_samples("test"))

    def _eval_dataset(self, samples: list[Sample]) -> StackDataset:
        return eval_dataset(samples, self.max_history, [self.seen(s) for s in samples] if self.exclude_seen else None)

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.valid_set)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
