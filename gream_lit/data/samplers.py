"""Distributed samplers that keep multi-process runs equal to one process.

Lightning inserts a ``torch`` ``DistributedSampler`` into every dataloader under DDP unless the loader
already has one. That sampler pads the dataset with repeated samples so all ranks get the same count:
evaluation over 2 processes then scores some users twice (``N + 1`` users for odd ``N``), and its
strided split cuts a batch-mixed curriculum stream across batch boundaries. Both samplers here are
``DistributedSampler`` subclasses, so Lightning leaves them alone; without ``torch.distributed`` they
act as a plain sequential sampler of one process.

* ``UnrepeatedDistributedSampler`` (validation/test/predict): every sample exactly once over all
  ranks; ranks may differ by one sample. Safe for torchmetrics states with ``dist_reduce_fx="sum"``
  (synced once at epoch end), not for per-step collectives.
* ``SequentialDistributedSampler`` (training on an ordered stream, e.g. the SFT curriculum): no
  shuffle; global step ``t`` covers the contiguous block ``[t*W*B, (t+1)*W*B)`` of the stream and rank
  ``r`` takes its ``r``-th contiguous slice of ``B`` samples, so a ``W``-process run sees the same
  samples per optimizer step as one process with batch ``W*B``, and a curriculum mixed in batches of
  ``B`` keeps each rank's batch homogeneous.
* ``BatchesDistributedSampler`` (training with a batch sampler, e.g. length bucketing or token budgets):
  whole batches round-robin over ranks, each yielded as one list of indices into a ``BatchedRows``
  dataset read by a ``DataLoader(batch_size=None)``, so batches may differ in size. A custom
  ``batch_sampler`` itself cannot run under DDP: Lightning fails to inject its sampler into it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Explicit ``(num_replicas, rank)`` or those of the initialised process group, else ``(1, 0)``."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
    return num_replicas, rank


class UnrepeatedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets indices ``r, r + W, r + 2W, ...``: no padding, no shuffle."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas, rank = _world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


def sequential_block_indices(
    n: int, batch_size: int, num_replicas: int, rank: int, drop_last: bool = False
) -> list[int]:
    """Indices of rank ``rank`` under ``SequentialDistributedSampler`` (see the module docstring).

    A last block shorter than ``num_replicas * batch_size`` is split into equal contiguous slices of
    ``ceil(rest / num_replicas)``; a rank whose slice runs past the end repeats the stream's last index,
    so every rank runs the same number of steps. ``drop_last`` drops that block instead.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    block = num_replicas * batch_size
    full = n // block
    out = [b * block + rank * batch_size + i for b in range(full) for i in range(batch_size)]
    rest = n - full * block
    if rest and not drop_last:
        share = -(-rest // num_replicas)
        start = full * block + rank * share
        out += [min(start + i, n - 1) for i in range(share)]
    return out


class SequentialDistributedSampler(DistributedSampler):
    """Ordered training stream split into per-step contiguous slices, one per rank (no shuffle).

    Args:
        dataset: the ordered samples.
        batch_size: per-process batch size of the dataloader using this sampler.
        num_replicas, rank: default to the initialised process group, else one process.
        drop_last: drop a last global step that is not full instead of padding it.
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        num_replicas, rank = _world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=drop_last)
        self.indices = sequential_block_indices(len(dataset), batch_size, num_replicas, rank, drop_last)
        self.batch_size = batch_size
        self.num_samples = len(self.indices)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class BatchesDistributedSampler(DistributedSampler):
    """Batch ``j`` of ``batch_sampler`` goes to rank ``j % W``; each rank yields its batches whole, in order.

    Ranks need the same number of batches, so the batch list is padded with its first batches (a few
    samples seen twice per epoch, as torch's sampler does). ``set_epoch`` is forwarded to
    ``batch_sampler`` when it has one (a new order per epoch); its length must not change between epochs.

    Args:
        batch_sampler: yields lists of dataset indices, as many every epoch; the same on every rank (seeded).
        num_replicas, rank: default to the initialised process group, else one process.
    """

    def __init__(self, batch_sampler: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas, rank = _world(num_replicas, rank)
        self.batch_sampler = batch_sampler
        self.num_replicas, self.rank, self.epoch, self.shuffle, self.drop_last = num_replicas, rank, 0, False, False

    def _rank_batches(self) -> list[list[int]]:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(self.epoch)
        batches = [list(b) for b in self.batch_sampler]
        batches += batches[: -len(batches) % self.num_replicas]
        return batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        """This rank's batch count (the padded list over ``W``), without drawing an epoch's batches."""
        return -(-len(self.batch_sampler) // self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())


class BatchedRows(Dataset):
    """``rows`` indexed by a list of positions (one batch from ``BatchesDistributedSampler``)."""

    def __init__(self, rows: Sequence) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, batch: list[int]) -> list:
        return [self.rows[i] for i in batch]
