"""MostPop and SASRec on tiny synthetic catalogs, and the real CLI on a tiny LC-Rec folder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from gream_lit.baselines import MostPop, SASRec
from gream_lit.baselines.mostpop import popularity_ranking
from gream_lit.baselines.sasrec import attention_block_mask
from gream_lit.baselines.seqrec_data import SeqRecDataModule
from gream_lit.experiment.cli import main


def write_lcrec(folder: Path, sequences: list[list[int]], n_items: int) -> Path:
    """A tiny LC-Rec dataset folder: toy.inter.json and toy.item.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.inter.json").write_text(json.dumps({str(u): s for u, s in enumerate(sequences)}))
    (folder / "toy.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(n_items)}))
    return folder


def cyclic_sequences(n_users: int, n_items: int, length: int) -> list[list[int]]:
    """User u walks items u, u+1, ... modulo n_items: the next item is a function of the last one."""
    return [[(u + t) % n_items for t in range(length)] for u in range(n_users)]


def quiet_trainer(root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **kwargs,
    )


def test_popularity_ranking_breaks_ties_by_index():
    assert popularity_ranking([[2, 0, 2], [0, 3]], 5).tolist() == [0, 2, 3, 1, 4]


def test_mostpop_counts_training_parts_only(tmp_path):
    # training parts: [0, 1], [1], [4, 1, 0] -> counts 1:3, 0:2, 4:1; items 2 and 3 only in valid/test
    sequences = [[0, 1, 2, 3], [1, 2, 3], [4, 1, 0, 2, 4]]
    data = SeqRecDataModule(str(write_lcrec(tmp_path / "toy", sequences, 5)), eval_batch_size=2)
    model = MostPop()
    [result] = quiet_trainer(tmp_path).test(model, datamodule=data)
    assert model.ranking.tolist() == [1, 0, 4, 2, 3]
    assert model.hparams.n_items == 5
    # test targets 3, 3, 4 sit at ranks 5, 5, 3
    assert result["mostpop/test/recall@1"] == 0.0
    assert result["mostpop/test/recall@5"] == pytest.approx(1.0)
    assert result["mostpop/test/ndcg@5"] == pytest.approx((2 / math.log2(6) + 1 / math.log2(4)) / 3)
    assert result["mostpop/test/mrr@10"] == pytest.approx((1 / 5 + 1 / 5 + 1 / 3) / 3)


def test_attention_mask_blocks_future_and_padding_but_never_self():
    mask = attention_block_mask(torch.tensor([[0, 0, 3, 4]]))[0]
    expected = torch.tensor(
        [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 0, 0]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_sasrec_overfits_a_tiny_cyclic_catalog(tmp_path):
    L.seed_everything(0)
    folder = write_lcrec(tmp_path / "toy", cyclic_sequences(24, 12, 8), 12)
    data = SeqRecDataModule(str(folder), max_history=6, batch_size=8)
    model = SASRec(hidden=32, layers=1, heads=2, dropout=0.0, lr=0.01)
    quiet_trainer(tmp_path, max_epochs=15, limit_val_batches=0).fit(model, datamodule=data)
    [result] = quiet_trainer(tmp_path).test(model, datamodule=data)
    assert result["sasrec/test/recall@1"] >= 0.9
    assert (model.hparams.n_items, model.hparams.max_len) == (12, 6)


def test_sasrec_rejects_a_catalog_of_another_size(tmp_path):
    data = SeqRecDataModule(str(write_lcrec(tmp_path / "toy", cyclic_sequences(4, 6, 4), 6)))
    with pytest.raises(ValueError, match="built for 9 items but toy has 6"):
        quiet_trainer(tmp_path).test(SASRec(n_items=9, max_len=20), datamodule=data)


TINY_CONFIG = """
seed_everything: 7
trainer:
  max_epochs: 3
  deterministic: true
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: {root}/runs, name: tiny}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: sasrec/val/ndcg@10, mode: max}}
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {{monitor: sasrec/val/ndcg@10, mode: max, patience: 2}}
model:
  class_path: gream_lit.baselines.SASRec
  init_args: {{hidden: 16, layers: 1, heads: 2, dropout: 0.1, lr: 0.01}}
data:
  class_path: gream_lit.baselines.seqrec_data.SeqRecDataModule
  init_args: {{data_dir: {data}, max_history: 5, batch_size: 8}}
"""


def _test_table(output: str) -> dict[str, str]:
    """The metric rows printed under the CLI's 'test (...)' heading."""
    table = output[output.index("test (best checkpoint)") :]
    return dict(re.findall(r"^(sasrec/test/\S+)\s+(\S+)$", table, flags=re.M))


def test_cli_fit_tests_the_best_checkpoint_and_is_deterministic(tmp_path, capsys):
    data = write_lcrec(tmp_path / "toy", cyclic_sequences(20, 15, 7), 15)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=tmp_path, data=data))
    tables = []
    for run in range(2):
        assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / f"run{run}")]) == 0
        tables.append(_test_table(capsys.readouterr().out))
    assert set(tables[0]) >= {"sasrec/test/recall@5", "sasrec/test/recall@10", "sasrec/test/ndcg@10"}
    assert tables[0] == tables[1]
    [checkpoint] = sorted((tmp_path / "runs" / "tiny" / "version_0" / "checkpoints").glob("*.ckpt"))
    restored = SASRec.load_from_checkpoint(checkpoint)
    assert (restored.hparams.n_items, restored.hparams.max_len) == (15, 5)
