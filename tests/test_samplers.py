"""Distributed samplers: hand-computed index lists for 1-3 ranks, against torch's padding sampler."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from gream_lit.data.samplers import (
    BatchedRows,
    BatchesDistributedSampler,
    SequentialDistributedSampler,
    UnrepeatedDistributedSampler,
    sequential_block_indices,
)


def test_torch_distributed_sampler_repeats_a_sample_when_uneven():
    # the behaviour the samplers below avoid: 5 items over 2 ranks -> item 0 is scored twice
    ranks = [list(DistributedSampler(range(5), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert ranks == [[0, 2, 4], [1, 3, 0]]


def test_unrepeated_sampler_covers_each_sample_once():
    ranks = [list(UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=r)) for r in range(2)]
    assert ranks == [[0, 2, 4], [1, 3]]
    assert [len(UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=r)) for r in range(2)] == [3, 2]
    three = [list(UnrepeatedDistributedSampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(three, [])) == list(range(7))


def test_samplers_without_process_group_are_one_sequential_process():
    assert list(UnrepeatedDistributedSampler(range(4))) == [0, 1, 2, 3]
    assert list(SequentialDistributedSampler(range(5), batch_size=2)) == [0, 1, 2, 3, 4]


def test_sequential_blocks_give_each_rank_a_contiguous_slice_per_step():
    # 12 items, 2 ranks, batch 3: step 0 = [0..5] (rank0 0-2, rank1 3-5), step 1 = [6..11]
    assert sequential_block_indices(12, 3, 2, 0) == [0, 1, 2, 6, 7, 8]
    assert sequential_block_indices(12, 3, 2, 1) == [3, 4, 5, 9, 10, 11]


def test_sequential_blocks_pad_the_last_step_with_the_last_index_only():
    # 9 items, 2 ranks, batch 2: full steps [0..3], [4..7]; rest [8] -> rank1 repeats 8
    assert sequential_block_indices(9, 2, 2, 0) == [0, 1, 4, 5, 8]
    assert sequential_block_indices(9, 2, 2, 1) == [2, 3, 6, 7, 8]
    # rest of 3 over 2 ranks: slices of 2 -> [8, 9] and [10, 10]
    assert sequential_block_indices(11, 4, 2, 0) == [0, 1, 2, 3, 8, 9]
    assert sequential_block_indices(11, 4, 2, 1) == [4, 5, 6, 7, 10, 10]
    assert sequential_block_indices(9, 2, 2, 1, drop_last=True) == [2, 3, 6, 7]


def test_sequential_sampler_matches_one_process_batches_step_by_step():
    data = list(range(23))
    single = list(DataLoader(data, batch_size=6))
    ranks = [
        list(DataLoader(data, batch_size=3, sampler=SequentialDistributedSampler(data, 3, 2, r))) for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, batch in enumerate(single[:-1]):
        assert ranks[0][step].tolist() + ranks[1][step].tolist() == batch.tolist()
    assert ranks[0][-1].tolist() + ranks[1][-1].tolist() == [18, 19, 20, 21, 22, 22]


def test_batches_go_whole_to_ranks_whatever_their_size():
    # 5 batches over 2 ranks -> padded to 6 with the first; each rank yields its batches as lists
    batches = [[6], [0, 1], [2, 3, 4], [5], [7, 8]]
    ranks = [list(BatchesDistributedSampler(batches, num_replicas=2, rank=r)) for r in range(2)]
    assert ranks == [[[6], [2, 3, 4], [7, 8]], [[0, 1], [5], [6]]]
    assert len(BatchesDistributedSampler(batches, 2, 1)) == 3 and len(BatchesDistributedSampler(batches, 1, 0)) == 5
    rows = BatchedRows("abcdefghi")
    loader = DataLoader(rows, batch_size=None, sampler=BatchesDistributedSampler(batches, 2, 1), collate_fn="".join)
    assert list(loader) == ["ab", "f", "g"]


def test_batches_sampler_forwards_the_epoch_and_keeps_bucketed_batches():
    from gream_lit.alignment.sft_data import BucketBatchSampler

    bucket = BucketBatchSampler([5, 1, 4, 2, 3, 9, 8, 7], batch_size=2, window=4, seed=0)
    sampler = BatchesDistributedSampler(bucket, num_replicas=2, rank=0)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        bucket.set_epoch(epoch)
        expected = list(bucket)[0::2]
        assert list(DataLoader(BatchedRows(range(8)), batch_size=None, sampler=sampler, collate_fn=list)) == expected


def test_bad_rank_or_batch_size_is_rejected():
    with pytest.raises(ValueError, match="rank=2"):
        UnrepeatedDistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        SequentialDistributedSampler(range(4), batch_size=0, num_replicas=1, rank=0)
