"""Integration: ``index build`` / ``index report`` and RQ-VAE ``fit`` through the real CLI on a tiny catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.experiment.cli import main
from gream_lit.indexing.quality_report import level_stats, residual_errors, semantic_lift

N_ITEMS = 48


def _tiny_dataset(root: Path) -> tuple[Path, Path]:
    """LC-Rec json folder with 48 items in 4 categories, and matching clustered embeddings."""
    data = root / "toy"
    data.mkdir()
    cats = ["Lab,Pipettes", "Lab,Beakers", "Tools,Drills", "Tools,Saws"]
    items = {
        str(i): {"title": f"{cats[i % 4].split(',')[1]} model {i}", "categories": cats[i % 4]} for i in range(N_ITEMS)
    }
    inter = {f"u{u}": [str((u + j) % N_ITEMS) for j in range(4)] for u in range(12)}
    (data / "toy.item.json").write_text(json.dumps(items))
    (data / "toy.inter.json").write_text(json.dumps(inter))
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 5
    emb = (centers[np.arange(N_ITEMS) % 4] + rng.normal(size=(N_ITEMS, 8))).astype(np.float32)
    np.save(root / "emb.npy", emb)
    return data, root / "emb.npy"


def test_index_build_and_report_cli(tmp_path, capsys) -> None:
    data, emb = _tiny_dataset(tmp_path)
    cfg = tmp_path / "build.yaml"
    cfg.write_text(yaml.safe_dump({"data": str(data), "levels": 2, "codebook_size": 4, "max_iter": 5}))
    out = tmp_path / "idx"
    assert main(["index", "build", "--config", str(cfg), "--embeddings", str(emb), "--out", str(out)]) == 0
    index = SemanticIndex.from_json(out / "toy.index.json")
    assert index.collisions() == 0 and index.codebook_sizes[:2] == [4, 4]
    report = json.loads((out / "report.json").read_text())
    assert report["collision_rate/after"] == 0 and report["collision_rate/before"] > 0
    assert report["level1/size_min"] == report["level1/size_max"] == 12  # balanced: 48 / 4
    assert report["semantic/category_lift"] > 2  # level 1 recovers the 4 categories
    assert list((out / "tb").iterdir())
    assert (
        main(["index", "report", "--data", str(data), "--index", str(out / "toy.index.json"), "--embeddings", str(emb)])
        == 0
    )
    assert "collision_rate/after" in capsys.readouterr().out


def test_rqvae_fit_writes_a_collision_free_index(tmp_path) -> None:
    data, emb = _tiny_dataset(tmp_path)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 1},
        "model": {
            "class_path": "gream_lit.indexing.rqvae.RQVAE",
            "init_args": {
                "levels": 2,
                "codebook_size": 4,
                "latent_dim": 4,
                "hidden_dims": [16],
                "sinkhorn_last_level": True,
            },
        },
        "data": {
            "class_path": "gream_lit.indexing.rqvae.ItemEmbeddingDataModule",
            "init_args": {"data_dir": str(data), "embeddings": str(emb), "batch_size": 16},
        },
    }
    cfg = tmp_path / "rqvae.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    written = list((tmp_path / "run").rglob("toy.index.json"))
    assert len(written) == 1
    index = SemanticIndex.from_json(written[0])
    assert index.n_items == N_ITEMS and index.collisions() == 0
    report = json.loads((written[0].parent / "index_report" / "report.json").read_text())
    assert report["collision_rate/after"] == 0 and "level1/perplexity" in report
    target = tmp_path / "stage" / "toy.index.json"  # how a pipeline stage names the file
    argv = [
        "fit",
        "--config",
        str(cfg),
        "--trainer.default_root_dir",
        str(tmp_path / "run2"),
        "--trainer.max_epochs",
        "1",
    ]
    assert main([*argv, "--model.init_args.output_path", str(target)]) == 0
    assert SemanticIndex.from_json(target).collisions() == 0


def test_level_stats_and_residual_errors_by_hand() -> None:
    stats = level_stats(np.array([0, 0, 1, 1, -1]), size=4)
    assert stats == {"usage": 0.5, "perplexity": 2.0, "size_min": 2.0, "size_max": 2.0, "size_cv": 0.0}
    emb = np.array([[0.0], [2.0], [10.0], [14.0]])
    codes = np.array([[0], [0], [1], [1]])
    assert residual_errors(codes, emb) == [2.5]  # residuals -1, 1, -2, 2 around means 1 and 12


def test_semantic_lift_is_high_when_prefixes_follow_categories(tmp_path) -> None:
    from gream_lit.data.readers import load_catalog

    data, _ = _tiny_dataset(tmp_path)
    catalog = load_catalog(data)
    codes = np.stack([np.arange(N_ITEMS) % 4, np.arange(N_ITEMS) % 2, np.arange(N_ITEMS) // 4], 1)
    lift = semantic_lift(SemanticIndex(codes, [4, 2, 12]), catalog, n_pairs=500)
    assert lift["semantic/same_category_prefix"] == 1.0
    assert 0.1 < lift["semantic/same_category_random"] < 0.4
    assert lift["semantic/title_jaccard_lift"] > 1
