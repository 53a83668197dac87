"""Token batches for TIGER: a hashed user token plus the history's semantic IDs in, the next ID out.

TIGER has its own small vocabulary (no text tokens): ``0`` pad (also T5's decoder start), ``1`` EOS,
then one token per (level, code) of the index, then ``user_buckets`` hashed user tokens. The decoder
target is the next item's ID padded with EOS to the index depth, the same paths the trie decodes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gream_lit.data.catalog import DataError
from gream_lit.data.datamodule import CatalogDataModule
from gream_lit.data.padding import pad
from gream_lit.data.resumable import ResumableDataLoader
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import Sample

PAD, EOS, FIRST_CODE = 0, 1, 2


@dataclass
class TigerVocab:
    """Token ids of TIGER's vocabulary for one index."""

    codebook_sizes: list[int]
    user_buckets: int

    @property
    def user_offset(self) -> int:
        return FIRST_CODE + sum(self.codebook_sizes)

    @property
    def size(self) -> int:
        return self.user_offset + self.user_buckets

    def item_token_ids(self, index: SemanticIndex) -> torch.Tensor:
        """``[n_items, depth]`` token ids of every ID (``-1`` pads shorter IDs)."""
        offsets = FIRST_CODE + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]])
        ids = np.where(index.codes >= 0, index.codes + offsets, -1)
        return torch.from_numpy(ids.astype(np.int64))

    def user_token(self, raw_user_id: str) -> int:
        """Stable hash bucket of a raw user id (crc32, so it does not change between runs)."""
        return self.user_offset + zlib.crc32(raw_user_id.encode()) % self.user_buckets


class TigerDataset(Dataset):
    """Encoder inputs and decoder labels for a list of samples; ``seen``: per sample, the items it must
    not be recommended (``exclude_seen``), or ``None``."""

    def __init__(
        self,
        samples: Sequence[Sample],
        item_ids: torch.Tensor,
        user_tokens: Sequence[int],
        seen: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.samples = samples
        self.seen = seen
        self.items = item_ids.tolist()
        self.paths = torch.where(item_ids >= 0, item_ids, torch.full_like(item_ids, EOS))
        self.user_tokens = user_tokens

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        tokens = [self.user_tokens[s.user]] + [t for item in s.history for t in self.items[item] if t >= 0] + [EOS]
        return {
            "input_ids": torch.tensor(tokens),
            "labels": self.paths[s.target],
            "target": torch.tensor(s.target),
            "user": torch.tensor(s.user),
            **({} if self.seen is None else {"seen": torch.tensor(self.seen[i], dtype=torch.long)}),
        }


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad encoder inputs (the encoder is bidirectional, so the side does not matter)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = r["input_ids"]
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "labels": torch.stack([r["labels"] for r in rows]),
        "target": torch.stack([r["target"] for r in rows]),
        "user": torch.stack([r["user"] for r in rows]),
        **({"seen": pad([r["seen"].tolist() for r in rows], -1)} if "seen" in rows[0] else {}),
    }


class TigerDataModule(CatalogDataModule):
    """Catalog + semantic index -> TIGER batches (``input_ids``, ``attention_mask``, ``labels``,
    ``target``, ``user``; evaluation batches also ``seen`` with ``exclude_seen``).

    Args:
        index_path: ``.index.json`` whose rows are the catalogue's items, in catalogue order.
        user_buckets: number of hashed user tokens (TIGER uses 2000).
        (other arguments: see ``CatalogDataModule``)
    """

    def __init__(self, index_path: str, user_buckets: int = 2000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if user_buckets < 1:
            raise DataError(f"user_buckets must be >= 1, got {user_buckets}")
        self.index_path = index_path
        self.user_buckets = user_buckets
        self.index: SemanticIndex | None = None
        self.vocab: TigerVocab | None = None

    def load(self):
        catalog = super().load()
        if self.index is None:
            index = SemanticIndex.from_json(self.index_path, n_items=catalog.n_items, unique=True)
            if index.collisions():
                raise DataError(f"{self.index_path}: {index.collisions()} items share an ID; TIGER needs unique IDs")
            self.index = index
            self.vocab = TigerVocab(list(index.codebook_sizes), self.user_buckets)
        return catalog

    def item_token_ids(self) -> torch.Tensor:
        self.load()
        return self.vocab.item_token_ids(self.index)

    def _dataset(self, samples: Sequence[Sample], evaluate: bool = True) -> TigerDataset:
        if not samples:
            raise DataError(f"{self.catalog.name}: no samples for this split")
        users = [self.vocab.user_token(u) for u in self.catalog.user_ids]
        seen = [self.seen(s) for s in samples] if evaluate and self.exclude_seen else None
        return TigerDataset(samples, self.item_token_ids(), users, seen)

    def build_datasets(self, stage: str | None) -> None:
        self.load()
        if stage in ("fit", None):
            self.train_set = self._dataset(self.split.train, evaluate=False)
        if stage in ("fit", "validate", None):
            self.valid_set = self._dataset(self.eval_samples("valid"))
        if stage in ("test", "predict", None):
            self.test_set = self._dataset(self.eval_samples("test"))

    def _loader(self, dataset: TigerDataset, batch_size: int, shuffle: bool = False) -> DataLoader:
        return ResumableDataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers, collate_fn=collate
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.valid_set, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, collate_fn=collate)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
