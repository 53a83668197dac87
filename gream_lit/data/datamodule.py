"""The LightningDataModule family's base: load a catalog once, split it leave-one-out.

Stage data modules (sequential baselines, indexing, SFT, RL) subclass ``CatalogDataModule`` and build
their datasets from ``self.catalog`` and ``self.split`` in ``build_datasets``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning as L
from jsonargparse.typing import PositiveInt  # a range the preflight checks
from torch.utils.data import DataLoader, Dataset

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.readers import load_catalog
from gream_lit.data.samplers import UnrepeatedDistributedSampler
from gream_lit.data.split import LeaveOneOut, Sample, leave_one_out

log = logging.getLogger(__name__)


class CatalogDataModule(L.LightningDataModule):
    """Base for every stage's data.

    Args:
        data_dir: dataset folder (or file, depending on the format); may be empty for sources that
            ship with a package, such as ``movielens_widedeep``.
        format: catalog reader name (``lcrec``, ``movielens``, ``movielens_widedeep``, ...).
        max_history: most recent items kept in a history (GREAM uses 20).
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size.
        num_workers: DataLoader workers.
        max_eval_users: evaluate on a random sample of N users only (0 = all), drawn with
            ``eval_seed``: the same users for every stage and model of an experiment, unlike the
            first N users of the file, which are not a random sample.
        eval_seed: seed of that sample.
        exclude_seen: never recommend an item the user has already consumed (the whole sequence before
            the target, not only the last ``max_history``): evaluation batches carry it as ``seen`` and
            the models mask it. ``False`` (GREAM's and LC-Rec's protocol) ranks the whole catalogue.
    """

    def __init__(
        self,
        data_dir: str = "",
        format: str = "lcrec",
        max_history: int = 20,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt = 256,
        num_workers: int = 0,
        max_eval_users: int = 0,
        eval_seed: int = 0,
        exclude_seen: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise DataError(f"{type(self).__name__}: {name} must be at least 1, got {value}")
        if max_eval_users < 0 or num_workers < 0:
            raise DataError(
                f"{type(self).__name__}: max_eval_users and num_workers must be >= 0 (0 = all users / no workers)"
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.format = format
        self.max_history = max_history
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_eval_users = max_eval_users
        self.eval_seed = eval_seed
        self.exclude_seen = exclude_seen
        self.catalog: Catalog | None = None
        self.split: LeaveOneOut | None = None

    def load(self) -> Catalog:
        """Read the catalog and split it; idempotent so models can call it from ``configure_model``."""
        if self.catalog is None:
            self.catalog = load_catalog(Path(self.data_dir) if self.data_dir else "", self.format)
            self.split = leave_one_out(self.catalog, self.max_history)
            log.info("catalog %s: %s", self.catalog.name, self.catalog.stats())
        return self.catalog

    def eval_samples(self, split: str):
        samples = self.split.split(split)
        if not self.max_eval_users or self.max_eval_users >= len(samples):
            return samples
        chosen = random.Random(self.eval_seed).sample(range(len(samples)), self.max_eval_users)
        return [samples[i] for i in sorted(chosen)]

    def seen(self, sample: Sample) -> list[int]:
        """The distinct items ``sample``'s user consumed before its target (its history where the
        sample does not know its place in the sequence)."""
        before = sample.history if sample.position is None else self.catalog.sequences[sample.user][: sample.position]
        return sorted(set(before))

    def eval_loader(self, dataset: Dataset, batch_size: int | None = None, collate_fn=None) -> DataLoader:
        """Validation/test loader that scores every user exactly once over all processes.

        Lightning would otherwise insert torch's DistributedSampler, which pads an uneven split with
        repeated users and so biases DDP metrics.
        """
        return DataLoader(
            dataset,
            batch_size=batch_size or self.eval_batch_size,
            sampler=UnrepeatedDistributedSampler(dataset),
            num_workers=self.num_workers,
            collate_fn=collate_fn,
        )

    def setup(self, stage: str | None = None) -> None:
        self.load()
        self.build_datasets(stage)

    def build_datasets(self, stage: str | None) -> None:
        """Subclasses build their datasets here."""
