"""Collision handling (rank / pad_all / reassign), index building, and SemanticIndex level checks."""

from __future__ import annotations

import numpy as np
import pytest

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.indexing.build import BuildConfig, build_index
from gream_lit.indexing.collisions import collision_rate, group_ranks, resolve_collisions

CODES = np.array([[0, 1], [0, 1], [2, 3], [0, 1]])


def test_group_ranks_follow_item_order() -> None:
    ranks, sizes = group_ranks(CODES)
    assert ranks.tolist() == [0, 1, 0, 2] and sizes.tolist() == [3, 3, 1, 3]


def test_rank_mode_gives_every_colliding_item_a_suffix() -> None:
    codes, sizes = resolve_collisions(CODES, [4, 4], "rank")
    assert codes[:, 2].tolist() == [0, 1, -1, 2] and sizes == [4, 4, 4]
    index = SemanticIndex(codes, sizes)
    assert index.item_string(0) == "<|a_1|><|b_2|><|c_1|>"
    assert index.item_string(2) == "<|a_3|><|b_4|>"
    assert index.collisions() == 0


def test_pad_all_mode_keeps_ids_fixed_length() -> None:
    codes, _ = resolve_collisions(CODES, [4, 4], "pad_all")
    assert codes[:, 2].tolist() == [0, 1, 0, 2]
    assert (SemanticIndex(codes, [4, 4, 4]).lengths() == 3).all()


def test_rank_mode_without_collisions_adds_no_level() -> None:
    codes, sizes = resolve_collisions(np.array([[0, 1], [1, 0]]), [2, 2], "rank")
    assert codes.shape == (2, 2) and sizes == [2, 2]


def test_reassign_moves_all_but_the_closest_member_to_free_codes() -> None:
    last_cost = np.array(
        [
            [9.0, 0.5, 1.0, 3.0],  # item 0: code 1, cost 0.5
            [9.0, 0.2, 4.0, 0.9],  # item 1: code 1, cost 0.2 -> stays
            [0.0, 0.0, 0.0, 0.0],
            [9.0, 0.3, 2.0, 5.0],  # item 3: code 1, cost 0.3
        ]
    )
    codes, sizes = resolve_collisions(CODES, [4, 4], "reassign", last_cost)
    # item 3 moves first (cheaper), takes code 2; item 0 then takes the next free code 3.
    assert codes[:, 1].tolist() == [3, 1, 3, 2] and sizes == [4, 4]
    assert collision_rate(codes) == 0


def test_reassign_fails_clearly_when_a_prefix_is_full() -> None:
    codes = np.zeros((3, 2), dtype=int)
    with pytest.raises(DataError, match="no free last-level code"):
        resolve_collisions(codes, [1, 2], "reassign", np.zeros((3, 2)))


@pytest.mark.parametrize("mode", ["rank", "pad_all", "reassign"])
def test_built_index_is_collision_free_in_every_mode(mode: str) -> None:
    emb = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    result = build_index(emb, BuildConfig(levels=2, codebook_size=16, collision=mode, max_iter=4))
    assert collision_rate(result.codes_before) > 0
    assert result.index.collisions() == 0
    assert len(result.index.lookup()) == 200


def test_same_seed_same_index(tmp_path) -> None:
    emb = np.random.default_rng(2).normal(size=(90, 6)).astype(np.float32)
    cfg = BuildConfig(levels=3, codebook_size=4, max_iter=5, seed=5)
    build_index(emb, cfg).index.to_json(tmp_path / "a.json")
    build_index(emb, cfg).index.to_json(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_level_count_disagreeing_with_tokens_is_an_error(tmp_path) -> None:
    with pytest.raises(DataError, match="3 levels but codebook_sizes lists 2"):
        SemanticIndex(np.zeros((2, 3), dtype=int), [4, 4])
    SemanticIndex(np.array([[0, 1, 2], [1, 0, 2]]), [4, 4, 4]).to_json(tmp_path / "x.index.json")
    with pytest.raises(DataError, match="up to 3 tokens but the config says 4 levels"):
        SemanticIndex.from_json(tmp_path / "x.index.json", depth=4)
