"""Leave-one-out split (docs/gream_spec.md §2.2 step 8): train prefixes, valid = second-to-last, test = last."""

from __future__ import annotations

from dataclasses import dataclass, field

from gream_lit.data.catalog import Catalog, DataError


@dataclass(frozen=True)
class Sample:
    """One next-item prediction: the user, the (already truncated) history and the target item.

    ``position``: the target's index in the user's whole sequence, so ``sequence[:position]`` is all the
    user had consumed before it (``exclude_seen``); ``None`` for a sample built from a bare history."""

    user: int
    history: tuple[int, ...]
    target: int
    position: int | None = field(default=None, compare=False)


@dataclass
class LeaveOneOut:
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]

    def split(self, name: str) -> list[Sample]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, valid or test")
        return getattr(self, name)


def train_sequences(catalog: Catalog) -> list[list[int]]:
    """Each user's training part ``seq[:-2]`` (what models may learn from)."""
    return [seq[:-2] for seq in catalog.sequences]


def leave_one_out(catalog: Catalog, max_history: int = 20, min_train_history: int = 1) -> LeaveOneOut:
    """Build samples for every user with at least 3 items.

    Train: every target ``seq[j]`` for ``min_train_history <= j < T-2`` with history ``seq[:j]``;
    valid: target ``seq[T-2]``; test: target ``seq[T-1]`` with history ``seq[:T-1]``. Histories keep
    the last ``max_history`` items.
    """
    if max_history < 1:
        raise DataError(f"max_history must be >= 1, got {max_history}")
    train, valid, test = [], [], []
    for u, seq in enumerate(catalog.sequences):
        t = len(seq)
        if t < 3:
            raise DataError(f"{catalog.name}: user {catalog.user_ids[u]!r} has {t} interactions; leave-one-out needs 3")
        for j in range(min_train_history, t - 2):
            train.append(Sample(u, tuple(seq[max(0, j - max_history) : j]), seq[j], j))
        valid.append(Sample(u, tuple(seq[max(0, t - 2 - max_history) : t - 2]), seq[t - 2], t - 2))
        test.append(Sample(u, tuple(seq[max(0, t - 1 - max_history) : t - 1]), seq[t - 1], t - 1))
    return LeaveOneOut(train, valid, test)
