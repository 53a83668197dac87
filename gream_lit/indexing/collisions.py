"""Making semantic IDs unique.

Three modes:

* ``rank`` (default, GREAM's code, docs/gream_spec.md §4.3): every item of a colliding group, the first included, gets
  one extra code = its rank in the group by item id; unique items keep their codes, so IDs have
  variable length (still prefix-free: a short ID never starts a long one).
* ``pad_all``: the same ranks, but every item gets the extra level (0 when unique), so all IDs have the
  same length; handy for decoders that assume fixed-length IDs.
* ``reassign`` (LC-Rec style): IDs keep their length; all but the member closest to its codeword move
  to the nearest last-level codeword that no other item under the same prefix uses.
"""

from __future__ import annotations

import numpy as np

from gream_lit.data.catalog import DataError

COLLISION_MODES = ("rank", "pad_all", "reassign")


def collision_rate(codes: np.ndarray) -> float:
    """Fraction of items whose full ID repeats an earlier item's (0 for a usable index)."""
    codes = np.asarray(codes)
    return 1.0 - len(np.unique(codes, axis=0)) / codes.shape[0]


def group_ranks(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: its 0-based rank among items with the same code tuple (item order), and the group size."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = np.empty(len(codes), dtype=np.int64)
    ranks[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return ranks, counts[inverse]


def add_rank_level(codes: np.ndarray, codebook_sizes: list[int], pad_all: bool = False) -> tuple[np.ndarray, list[int]]:
    """Append the collision-rank level; its codebook is as large as the last level's (or the largest group)."""
    ranks, group = group_ranks(codes)
    if not pad_all and (group == 1).all():
        return codes.copy(), list(codebook_sizes)
    extra = np.where((group > 1) | pad_all, ranks, -1)
    size = max(int(codebook_sizes[-1]), int(group.max()))
    return np.concatenate([codes, extra[:, None]], axis=1), [*codebook_sizes, size]


def reassign_last_level(codes: np.ndarray, last_cost: np.ndarray) -> np.ndarray:
    """Move colliding items to the cheapest last-level code still free under their prefix."""
    codes = codes.copy()
    n, k = last_cost.shape
    if last_cost.shape[0] != codes.shape[0]:
        raise DataError(f"last-level costs cover {last_cost.shape[0]} items but there are {codes.shape[0]}")
    used: dict[tuple[int, ...], set[int]] = {}
    for row in codes:
        used.setdefault(tuple(row[:-1].tolist()), set()).add(int(row[-1]))
    ranks, group = group_ranks(codes)
    colliding = np.flatnonzero(group > 1)
    own_cost = last_cost[np.arange(n), codes[:, -1]]
    # Per group, the member closest to the shared codeword stays; the others move, closest first.
    keys = [tuple(codes[i].tolist()) for i in colliding]
    stays: dict[tuple[int, ...], int] = {}
    for key, i in zip(keys, colliding):
        if key not in stays or own_cost[i] < own_cost[stays[key]]:
            stays[key] = int(i)
    movers = sorted((int(i) for key, i in zip(keys, colliding) if stays[key] != i), key=lambda i: own_cost[i])
    for i in movers:
        prefix = tuple(codes[i, :-1].tolist())
        taken = used[prefix]
        if len(taken) >= k:
            raise DataError(
                f"more than {k} items share the prefix {prefix}: no free last-level code; use collision mode 'rank'"
            )
        for c in np.argsort(last_cost[i], kind="stable"):
            if int(c) not in taken:
                codes[i, -1] = c
                taken.add(int(c))
                break
    return codes


def resolve_collisions(
    codes: np.ndarray, codebook_sizes: list[int], mode: str = "rank", last_cost: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """Collision-free codes (and codebook sizes) by one of ``COLLISION_MODES``."""
    if mode in ("rank", "pad_all"):
        out, sizes = add_rank_level(codes, codebook_sizes, pad_all=mode == "pad_all")
    elif mode == "reassign":
        if last_cost is None:
            raise ValueError("collision mode 'reassign' needs the last level's item-to-codeword costs")
        out, sizes = reassign_last_level(codes, last_cost), list(codebook_sizes)
    else:
        raise ValueError(f"unknown collision mode {mode!r}; expected one of {COLLISION_MODES}")
    if collision_rate(np.where(out < 0, -1, out)) > 0:
        raise DataError(f"collision mode {mode!r} left colliding IDs")
    return out, sizes
