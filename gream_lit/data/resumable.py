"""A training DataLoader that Lightning can checkpoint in the middle of an epoch.

Lightning saves the ``state_dict`` of every training loader that has one and hands it back before the
resumed run builds its iterator. This loader's state is the global torch random state its epoch order was
drawn from and the number of batches it has served; restored, it redraws the same order, skips the batches
already trained on and puts back the random state the checkpoint restored, so a run killed after a
mid-epoch checkpoint (``val_check_interval``, ``every_n_train_steps``) goes on with the batches the
uninterrupted run would have trained on. (Lightning prefetches nothing from a loader with a length, so the
batches served are the batches trained.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with ``state_dict``/``load_state_dict`` for exact mid-epoch resumption."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._order_rng: torch.Tensor | None = None
        self._served = 0
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        before = torch.get_rng_state() if resume is not None else None
        return self._serve(super().__iter__(), resume, before)

    def _serve(self, iterator: Iterator[Any], resume: dict[str, Any] | None, before: torch.Tensor | None):
        """Runs from the first ``next``, where a plain DataLoader draws its epoch order: an uninterrupted run
        draws exactly what it would without this class."""
        if resume is not None:
            torch.set_rng_state(resume["order_rng"])
        self._order_rng = torch.get_rng_state()
        batch = next(iterator, _END)  # the sampler draws the epoch order here
        self._served = 0
        if resume is not None:
            for _ in range(resume["served"]):
                if batch is _END:
                    break
                self._served += 1
                batch = next(iterator, _END)
            torch.set_rng_state(before)  # the checkpoint's random state, as the interrupted run had it
        while batch is not _END:
            self._served += 1
            yield batch
            batch = next(iterator, _END)

    def state_dict(self) -> dict[str, Any]:
        return {"order_rng": self._order_rng, "served": self._served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("order_rng") is not None:
            self._resume = {"order_rng": state["order_rng"], "served": int(state["served"])}


_END = object()
