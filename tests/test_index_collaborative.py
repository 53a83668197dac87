"""Collaborative semantic IDs: co-occurrence embeddings, fusion with text, the next-item prefix lift, and
the index stage that quantises text and behaviour together."""

from __future__ import annotations

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
    import json

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
