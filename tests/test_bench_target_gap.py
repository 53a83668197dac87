"""The metric of benchmarks/ml100k_target_gap.py against hand-computed values."""

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ml100k_target_gap.py"
_SPEC = importlib.util.spec_from_file_location("ml100k_target_gap", _PATH)
gap = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gap)


def test_recall_and_ndcg_of_one_target_per_list() -> None:
    ranked = [["a", "b", "c"], ["d", "e"], ["f"]]
    recall, ndcg = gap.recall_ndcg(ranked, ["b", "x", "f"])  # hits at rank 2 and rank 1, one miss
    assert recall == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1 / math.log2(3) + 1.0) / 3)


def test_a_hit_past_the_tenth_place_does_not_count() -> None:
    ranked = [[str(i) for i in range(12)]]
    assert gap.recall_ndcg(ranked, ["11"]) == (0.0, 0.0)
