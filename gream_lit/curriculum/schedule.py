"""Orders alignment and reasoning samples into one SFT stream (docs/gream_spec.md §5.3). Training must not shuffle it.

Schedules (pure functions of the two lists, the batch size and seeds):

* ``official``: docs/gream_spec.md §5.3 exactly. The alignment rows are cut into three contiguous parts (about one
  alignment pass each); one ``random.Random(20241006)`` shuffles part 1, 2, 3 and then the reasoning
  rows. Parts 1 and 2 (seeds 42, 43) walk their alignment batches and after batch ``i`` insert the
  next reasoning batch with probability ``p_i = (i / |O|) * (|R| / |O|) * 1.5``; reasoning batches
  left over are appended at the end of the part. Part 3 (seed 44) shuffles its alignment batches with
  all reasoning batches uniformly. The reasoning set is thus seen three times.
* ``staged``: alignment first, then reasoning brought in step by step: the alignment rows are cut into
  ``n_stages`` parts; stage 1 is alignment only, stage ``s`` mixes its part uniformly with the first
  ``(s - 1) / (n_stages - 1)`` of the reasoning batches, so the last stage holds all of them.
* ``none``: the ablation without a curriculum: all alignment batches and ``reason_passes`` copies of
  the reasoning batches in one uniform shuffle.

Mixing happens at batch granularity (``batch_size`` rows), as in the official code, so a batch is
never half alignment, half reasoning.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

T = TypeVar("T")
Schedule = Literal["official", "staged", "none"]
SCHEDULES = get_args(Schedule)
OFFICIAL_SHUFFLE_SEED = 20241006
OFFICIAL_SEEDS = (42, 43, 44)


@dataclass
class PartStats:
    """Batches in one part of the stream: alignment, reasoning inserted during it, reasoning appended."""

    align_batches: int
    inserted: int
    appended: int


@dataclass
class MixStats:
    schedule: str
    parts: list[PartStats] = field(default_factory=list)

    @property
    def reasoning_batches(self) -> int:
        return sum(p.inserted + p.appended for p in self.parts)


def split_contiguous(rows: Sequence[T], n: int) -> list[list[T]]:
    """``np.array_split`` semantics: ``n`` contiguous parts, the first ``len % n`` one longer."""
    if n < 1:
        raise ValueError(f"need at least one part, got {n}")
    q, r = divmod(len(rows), n)
    out, start = [], 0
    for k in range(n):
        end = start + q + (1 if k < r else 0)
        out.append(list(rows[start:end]))
        start = end
    return out


def batches(rows: Sequence[T], size: int) -> list[list[T]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]


def curriculum_insert(
    align: list[list[T]], reason: list[list[T]], seed: int, scale: float = 1.5
) -> tuple[list[list[T]], PartStats]:
    """One curriculum part of the official schedule: the reasoning share grows linearly from zero."""
    rng = random.Random(seed)
    queue = list(reason)
    n_align, n_reason = len(align), len(reason)
    out: list[list[T]] = []
    inserted = 0
    for i, batch in enumerate(align):
        out.append(batch)
        p = (i / n_align) * n_reason / n_align * scale
        if rng.random() < p and queue:
            out.append(queue.pop(0))
            inserted += 1
    out.extend(queue)
    return out, PartStats(n_align, inserted, len(queue))


def uniform_mix(align: list[list[T]], reason: list[list[T]], seed: int) -> tuple[list[list[T]], PartStats]:
    out = list(align) + list(reason)
    random.Random(seed).shuffle(out)
    return out, PartStats(len(align), len(reason), 0)


def _flatten(parts: list[list[list[T]]]) -> list[T]:
    return [row for part in parts for batch in part for row in batch]


def official_schedule(
    align: Sequence[T],
    reason: Sequence[T],
    batch_size: int = 8,
    shuffle_seed: int = OFFICIAL_SHUFFLE_SEED,
    seeds: Sequence[int] = OFFICIAL_SEEDS,
    scale: float = 1.5,
) -> tuple[list[T], MixStats]:
    if len(seeds) != 3:
        raise ValueError(f"the official schedule has three parts; got seeds {list(seeds)}")
    parts = split_contiguous(align, 3)
    reason_rows = list(reason)
    rng = random.Random(shuffle_seed)
    for part in parts:
        rng.shuffle(part)
    rng.shuffle(reason_rows)
    reason_batches = batches(reason_rows, batch_size)
    stats = MixStats("official")
    mixed = []
    for k, (part, seed) in enumerate(zip(parts, seeds)):
        if k < 2:
            out, ps = curriculum_insert(batches(part, batch_size), reason_batches, seed, scale)
        else:
            out, ps = uniform_mix(batches(part, batch_size), reason_batches, seed)
        mixed.append(out)
        stats.parts.append(ps)
    return _flatten(mixed), stats


def staged_schedule(
    align: Sequence[T], reason: Sequence[T], batch_size: int = 8, n_stages: int = 3, seed: int = 0
) -> tuple[list[T], MixStats]:
    if n_stages < 2:
        raise ValueError(f"staged needs at least 2 stages (alignment, then reasoning), got {n_stages}")
    rng = random.Random(seed)
    reason_rows = list(reason)
    rng.shuffle(reason_rows)
    reason_batches = batches(reason_rows, batch_size)
    stats = MixStats("staged")
    mixed = []
    for s, part in enumerate(split_contiguous(align, n_stages)):
        share = round(len(reason_batches) * s / (n_stages - 1))
        out, ps = uniform_mix(batches(part, batch_size), reason_batches[:share], rng.randrange(2**31))
        mixed.append(out)
        stats.parts.append(ps)
    return _flatten(mixed), stats


def no_curriculum(
    align: Sequence[T], reason: Sequence[T], batch_size: int = 8, reason_passes: int = 3, seed: int = 0
) -> tuple[list[T], MixStats]:
    if reason_passes < 0:
        raise ValueError(f"reason_passes must be >= 0, got {reason_passes}")
    out, ps = uniform_mix(batches(list(align), batch_size), batches(list(reason), batch_size) * reason_passes, seed)
    return _flatten([out]), MixStats("none", [ps])


def mix(
    align: Sequence[T],
    reason: Sequence[T],
    schedule: str = "official",
    batch_size: int = 8,
    seed: int = 0,
    n_stages: int = 3,
    reason_passes: int = 3,
) -> tuple[list[T], MixStats]:
    """The SFT stream for ``schedule`` (official | staged | none); ``official`` uses its fixed seeds."""
    if not align:
        raise ValueError("no alignment samples to mix")
    if schedule == "official":
        return official_schedule(align, reason, batch_size)
    if schedule == "staged":
        return staged_schedule(align, reason, batch_size, n_stages, seed)
    if schedule == "none":
        return no_curriculum(align, reason, batch_size, reason_passes, seed)
    raise ValueError(f"unknown curriculum schedule {schedule!r}; expected one of {SCHEDULES}")
