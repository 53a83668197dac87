"""Curriculum schedules: fixed-seed counts, docs/gream_spec.md §5.3 parity, and each schedule's invariants."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from gream_lit.curriculum.schedule import (
    batches,
    curriculum_insert,
    mix,
    official_schedule,
    split_contiguous,
)

ALIGN = [f"a{i}" for i in range(800)]
REASON = [f"r{i}" for i in range(240)]


def spec_reference(ori, reason, b=8):
    """Spec §5.3 pseudocode transcribed literally (numpy split, the global ``random`` module)."""
    parts = [list(p) for p in np.array_split(np.array(ori, dtype=object), 3)]
    reason = list(reason)
    rng = random.Random(20241006)
    for p in parts:
        rng.shuffle(p)
    rng.shuffle(reason)

    def one(part, seed, curriculum):
        random.seed(seed)
        plain = [part[i : i + b] for i in range(0, len(part), b)]
        Rq = [reason[i : i + b] for i in range(0, len(reason), b)]
        n_r = len(Rq)
        if not curriculum:
            out = plain + Rq
            random.shuffle(out)
            return [x for bt in out for x in bt]
        out = []
        for i, ob in enumerate(plain):
            out.append(ob)
            if random.random() < (i / len(plain)) * (n_r / len(plain)) * 1.5 and Rq:
                out.append(Rq.pop(0))
        return [x for bt in out + Rq for x in bt]

    return one(parts[0], 42, True) + one(parts[1], 43, True) + one(parts[2], 44, False)


def test_split_contiguous_matches_numpy():
    rows = list(range(10))
    assert split_contiguous(rows, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(p) for p in split_contiguous(rows, 3)] == [len(p) for p in np.array_split(rows, 3)]


def test_official_equals_spec_pseudocode():
    mixed, _ = official_schedule(ALIGN, REASON, batch_size=8)
    assert mixed == spec_reference(ALIGN, REASON)


def test_official_counts_with_fixed_seeds():
    mixed, stats = mix(ALIGN, REASON, "official", batch_size=8)
    # 800 alignment rows -> parts of 267/267/266 rows = 34/34/34 batches; 240 reasoning rows = 30 batches.
    assert [p.align_batches for p in stats.parts] == [34, 34, 34]
    # Fixed seeds 42/43 give these insert/append splits (expected inserts: sum of min(1, p_i) = 20.7).
    assert [(p.inserted, p.appended) for p in stats.parts[:2]] == [(22, 8), (20, 10)]
    assert (stats.parts[2].inserted, stats.parts[2].appended) == (30, 0)
    counts = Counter(mixed)
    assert all(counts[a] == 1 for a in ALIGN) and all(counts[r] == 3 for r in REASON)
    assert len(mixed) == 800 + 3 * 240


def test_curriculum_insert_grows_and_appends_leftovers():
    align = [[f"a{i}"] for i in range(10)]
    reason = [[f"r{i}"] for i in range(3)]
    out, stats = curriculum_insert(align, reason, seed=0)
    assert out[0] == ["a0"] and out[1] == ["a1"]  # p_0 = 0: nothing can follow the first batch
    assert stats.inserted + stats.appended == 3
    assert out[len(out) - stats.appended :] == reason[3 - stats.appended :]
    assert [b for b in out if b[0].startswith("r")] == reason  # queue order is kept


def test_staged_alignment_first_then_growing_reasoning():
    mixed, stats = mix(ALIGN, REASON, "staged", batch_size=8, n_stages=3, seed=1)
    first = len(split_contiguous(ALIGN, 3)[0])
    assert all(x.startswith("a") for x in mixed[:first])
    assert [p.inserted for p in stats.parts] == [0, 15, 30]
    assert Counter(mixed)["a5"] == 1 and len(mixed) == 800 + 15 * 8 + 240


def test_none_is_uniform_and_reproducible():
    mixed, stats = mix(ALIGN, REASON, "none", batch_size=8, seed=3, reason_passes=3)
    again, _ = mix(ALIGN, REASON, "none", batch_size=8, seed=3, reason_passes=3)
    assert mixed == again
    assert stats.reasoning_batches == 90 and len(mixed) == 800 + 720
    positions = [i for i, x in enumerate(mixed) if x.startswith("r")]
    assert positions[0] < len(mixed) / 4 and np.mean(positions) == pytest.approx(len(mixed) / 2, rel=0.15)


def test_bad_schedule_and_batch_size():
    with pytest.raises(ValueError, match="unknown curriculum schedule 'random'"):
        mix(ALIGN, REASON, "random")
    with pytest.raises(ValueError, match="batch_size"):
        batches([1], 0)
    with pytest.raises(ValueError, match="no alignment samples"):
        mix([], REASON)
