"""Leave-one-out split and the item-id tensors built from it, on hand-made catalogs."""

from __future__ import annotations

import pytest
import torch

from gream_lit.baselines.seqrec_data import IGNORE, autoregressive_example, eval_dataset, left_pad, train_dataset
from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.split import Sample, leave_one_out, train_sequences


def toy_catalog(sequences: list[list[int]], n_items: int) -> Catalog:
    return Catalog(
        name="toy",
        sequences=sequences,
        items=[{"title": f"item {i}"} for i in range(n_items)],
        item_ids=[str(i) for i in range(n_items)],
        user_ids=[f"u{u}" for u in range(len(sequences))],
    )


def test_leave_one_out_on_a_hand_made_catalog():
    split = leave_one_out(toy_catalog([[0, 1, 2, 3], [4, 0, 1]], 5))
    assert split.train == [Sample(0, (0,), 1)]
    assert split.valid == [Sample(0, (0, 1), 2), Sample(1, (4,), 0)]
    assert split.test == [Sample(0, (0, 1, 2), 3), Sample(1, (4, 0), 1)]
    assert train_sequences(toy_catalog([[0, 1, 2, 3], [4, 0, 1]], 5)) == [[0, 1], [4]]


def test_max_history_keeps_the_most_recent_items():
    split = leave_one_out(toy_catalog([[0, 1, 2, 3, 4, 5]], 6), max_history=2)
    assert split.train == [Sample(0, (0,), 1), Sample(0, (0, 1), 2), Sample(0, (1, 2), 3)]
    assert split.valid == [Sample(0, (2, 3), 4)]
    assert split.test == [Sample(0, (3, 4), 5)]


def test_split_rejects_short_users_and_bad_history_length():
    with pytest.raises(DataError, match="'u1' has 2 interactions"):
        leave_one_out(toy_catalog([[0, 1, 2], [1, 2]], 3))
    with pytest.raises(DataError, match="max_history must be >= 1"):
        leave_one_out(toy_catalog([[0, 1, 2]], 3), max_history=0)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        leave_one_out(toy_catalog([[0, 1, 2]], 3)).split("dev")


def test_left_pad_shifts_ids_and_truncates():
    assert left_pad([0, 4], 4) == [0, 0, 1, 5]
    assert left_pad([0, 1, 2, 3], 2) == [3, 4]


def test_autoregressive_example_aligns_inputs_with_next_items():
    assert autoregressive_example([7, 2, 5], 4) == ([0, 0, 8, 3], [IGNORE, IGNORE, 2, 5])
    assert autoregressive_example([10, 20, 30, 40, 50], 2) == ([31, 41], [40, 50])


def test_datasets_from_the_split():
    catalog = toy_catalog([[0, 1, 2, 3], [4, 0, 1]], 5)
    train = train_dataset(train_sequences(catalog), 3)
    assert len(train) == 1  # user 1's training part [4] has no next item to learn
    assert train[0]["history"].tolist() == [0, 0, 1] and train[0]["labels"].tolist() == [IGNORE, IGNORE, 1]
    test = eval_dataset(leave_one_out(catalog).test, 3)
    assert torch.equal(test.datasets["history"], torch.tensor([[1, 2, 3], [0, 5, 1]]))
    assert test.datasets["target"].tolist() == [3, 1] and test.datasets["user"].tolist() == [0, 1]
    with pytest.raises(DataError, match="toy: no user has two or more training items"):
        train_dataset([[0], [3]], 3, "toy")
