"""Collaborative semantic IDs: co-occurrence embeddings, fusion with text, the next-item prefix lift, and
the index stage that quantises text and behaviour together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gream_lit.indexing.collaborative import cooccurrence_embeddings, fuse, sequential_prefix_lift


def test_items_consumed_together_get_parallel_embeddings_and_strangers_orthogonal_ones() -> None:
    sequences = [[0, 1, 2, 0, 1, 2], [2, 1, 0], [3, 4, 5, 3], [5, 4, 3, 5]]  # two groups of three films
    emb = cooccurrence_embeddings(sequences, 7, dim=2, window=2)
    unit = emb[:6] / np.linalg.norm(emb[:6], axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.testing.assert_allclose(cosine[:3, :3], 1.0, atol=1e-5)
    np.testing.assert_allclose(cosine[3:, 3:], 1.0, atol=1e-5)
    np.testing.assert_allclose(cosine[:3, 3:], 0.0, atol=1e-5)
    assert not emb[6].any()  # never consumed: no behaviour to encode


def test_fuse_gives_the_collaborative_half_its_share_of_each_row() -> None:
    out = fuse(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[0.0, 2.0], [0.0, 0.0]]), 0.36)
    np.testing.assert_allclose(out, [[0.48, 0.64, 0.0, 0.6], [0.8, 0.0, 0.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse(np.ones((1, 2)), np.ones((1, 2)), 1.5)


def test_next_item_prefix_lift_against_independent_draws() -> None:
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    # consecutive pairs (0,1) same group, (1,2) not, (2,3) same: 2/3 shared; chance 2/3*1/3 + 1/3*2/3 = 4/9
    out = sequential_prefix_lift(codes, [[0, 1, 2], [2, 3], [3, 3]], prefix=1)
    assert out["collaborative/next_item_prefix1_shared"] == pytest.approx(2 / 3)
    assert out["collaborative/next_item_prefix1_chance"] == pytest.approx(4 / 9)
    assert out["collaborative/next_item_prefix1_lift"] == pytest.approx(1.5)
    assert sequential_prefix_lift(codes, [[1]]) == {}


def test_the_index_stage_quantises_text_and_behaviour_and_reports_the_lift(tmp_path) -> None:
    """On a catalogue whose users walk two groups of items that the text embeddings mix up, text-only IDs
    split nothing along behaviour; fused IDs give their first code to the groups users walk."""

    from test_baselines import quiet_trainer

    from gream_lit.data.semantic_index import SemanticIndex
    from gream_lit.indexing.rqkmeans_stage import RQKMeansIndex
    from gream_lit.indexing.rqvae import ItemEmbeddingDataModule

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    (data / "Toy.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(8)}))
    walks = {f"u{u}": [int(x) for x in rng.permutation(4)[:3] + 4 * (u % 2)] * 3 for u in range(20)}
    (data / "Toy.inter.json").write_text(json.dumps(walks))  # users stay within items 0-3 or within 4-7
    text = np.tile(np.eye(2), (4, 1)) + 0.01 * rng.normal(size=(8, 2))  # text pairs item i with i + 4
    np.save(tmp_path / "emb.npy", text.astype(np.float32))

    lifts = {}
    for weight in (0.0, 0.9):
        out = tmp_path / f"w{weight}.index.json"
        dm = ItemEmbeddingDataModule(str(data), embeddings=str(tmp_path / "emb.npy"), collaborative_weight=weight)
        model = RQKMeansIndex(str(out), levels=2, codebook_size=4, collision="reassign", n_init=1)
        trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
        trainer.fit(model, datamodule=dm)
        [result] = trainer.test(model, datamodule=dm)
        lifts[weight] = result["index/test/collaborative_next_item_prefix1_lift"]
        assert dm.embeddings.shape[1] == (2 if weight == 0 else 66)
        first = SemanticIndex.from_json(out).codes[:, 0]
        assert set(first[:4]).isdisjoint(first[4:]) == bool(weight)  # a first code never spans both groups
    assert lifts[0.0] < 1.0 and lifts[0.9] > 1.2


def test_auto_codebook_size_holds_the_id_space_in_the_fewest_multiples() -> None:
    """2.4 IDs per item in 2 levels: 1,682 items need 4,037 IDs, 64^2 = 4,096 holds them and 56^2 does not."""
    from gream_lit.indexing.build import auto_codebook_size

    assert auto_codebook_size(1682, 2) == 64
    assert auto_codebook_size(4344, 2) == 104  # 10,426 IDs: 104^2 = 10,816, 96^2 = 9,216
    assert auto_codebook_size(16859, 2) == 208
    assert auto_codebook_size(1682, 3) == 16  # 16^3 = 4,096
    assert auto_codebook_size(10, 2) == 8  # at least one multiple
    assert auto_codebook_size(4096, 2, multiple=1) == 100  # 99^2 = 9,801 < 9,830.4
    with pytest.raises(ValueError, match="id_space > 1"):
        auto_codebook_size(100, 2, id_space=1.0)


def test_the_index_stage_sizes_auto_levels_to_its_catalogue(tmp_path) -> None:
    """``codebook_size: auto`` becomes the catalogue's size when the stage sees its items; a misspelt size
    fails when the module is built, before any embedding."""
    from test_baselines import quiet_trainer

    from gream_lit.data.semantic_index import SemanticIndex
    from gream_lit.indexing.rqkmeans_stage import RQKMeansIndex
    from gream_lit.indexing.rqvae import ItemEmbeddingDataModule

    data = tmp_path / "data"
    data.mkdir()
    (data / "Toy.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(30)}))
    (data / "Toy.inter.json").write_text(json.dumps({f"u{u}": [u % 30, (u + 1) % 30, (u + 2) % 30] for u in range(30)}))
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))
    out = tmp_path / "auto.index.json"
    model = RQKMeansIndex(str(out), levels=2, codebook_size="auto", collision="reassign", n_init=1, id_space=4.0)
    dm = ItemEmbeddingDataModule(str(data), embeddings=str(tmp_path / "emb.npy"))
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(model, datamodule=dm)
    index = SemanticIndex.from_json(out)
    assert model.build_config(30).codebook_size == 16  # 120 IDs: 8^2 = 64 is short, 16^2 = 256 holds them
    assert max(index.codes[:, 1]) < 16
    assert index.codes.shape == (30, 2) and len({tuple(c) for c in index.codes}) == 30
    with pytest.raises(ValueError, match="'auto'"):
        RQKMeansIndex(str(out), codebook_size="atuo")
