"""TIGER: data encoding, exact decoding for an encoder-decoder, and the real CLI on a tiny catalogue."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration

from gream_lit.baselines.tiger import Tiger
from gream_lit.baselines.tiger_data import EOS, PAD, TigerDataModule, TigerVocab, collate
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.experiment.cli import main
from gream_lit.experiment.lightning_cli import GreamCLI, explicit_model_keys
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import build_prefix_tables


def write_catalog(folder: Path, n_items: int = 12, n_users: int = 30, seed: int = 0) -> Path:
    """A tiny LC-Rec dataset plus a 2-level index with one 3-token ID (variable length)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    inter = {str(u): [rng.randrange(n_items) for _ in range(rng.randint(3, 7))] for u in range(n_users)}
    items = {str(i): {"title": f"item {i}"} for i in range(n_items)}
    (folder / "Toy.inter.json").write_text(json.dumps(inter))
    (folder / "Toy.item.json").write_text(json.dumps(items))
    codes = np.array([[i // 4, i % 4, -1] for i in range(n_items)])
    codes[-1] = [0, 0, 1]  # shares the prefix of item 0, one token longer
    SemanticIndex(codes=codes, codebook_sizes=[3, 4, 2], style="gream").to_json(folder / "Toy.index.json")
    return folder


def test_vocab_and_batches(tmp_path: Path) -> None:
    folder = write_catalog(tmp_path / "toy")
    dm = TigerDataModule(index_path=str(folder / "Toy.index.json"), data_dir=str(folder), user_buckets=5)
    dm.setup("fit")
    assert dm.vocab.size == 2 + 3 + 4 + 2 + 5
    ids = dm.item_token_ids()
    assert ids[1].tolist() == [2, 5 + 1, -1] and ids[11].tolist() == [2, 5, 9 + 1]
    sample = dm.train_set.samples[0]
    row = dm.train_set[0]
    hist = [t for i in sample.history for t in ids[i].tolist() if t >= 0]
    assert row["input_ids"].tolist()[1:] == hist + [EOS]
    assert dm.vocab.user_offset <= row["input_ids"][0] < dm.vocab.size
    assert row["labels"].tolist() == [t if t >= 0 else EOS for t in ids[sample.target].tolist()]
    batch = collate([dm.train_set[0], dm.train_set[1]])
    assert batch["attention_mask"].sum().item() == (batch["input_ids"] != PAD).sum().item()


def test_user_hash_is_stable() -> None:
    vocab = TigerVocab([4, 4], user_buckets=7)
    assert vocab.user_token("A1B2") == vocab.user_token("A1B2")
    assert vocab.user_offset <= vocab.user_token("anyone") < vocab.size


@torch.no_grad()
def test_encoder_decoder_beam_equals_exact_ranking() -> None:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=20,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    model = T5ForConditionalGeneration(config).eval()
    ids = torch.tensor([[2, 5, -1], [2, 6, -1], [3, 5, -1], [4, 7, 8], [4, 7, 9], [2, 5, 9]])
    paths = torch.where(ids >= 0, ids, torch.full_like(ids, EOS))
    enc = torch.tensor([[10, 11, 12, 1], [13, 1, 0, 0]])
    mask = (enc != PAD).long()
    out = constrained_beam_search(model, enc, mask, build_prefix_tables(ids, EOS), num_beams=6)
    for b in range(2):
        n = int(mask[b].sum())
        logits = model(input_ids=enc[b : b + 1, :n].expand(len(ids), -1), labels=paths).logits
        exact = logits.log_softmax(-1).gather(-1, paths.unsqueeze(-1)).squeeze(-1).sum(-1)
        order = torch.sort(exact, descending=True, stable=True).indices
        assert out.items[b].tolist() == order.tolist()
        torch.testing.assert_close(out.scores[b], exact[order], atol=1e-4, rtol=1e-4)


def tiny_tiger_yaml(folder: Path) -> str:
    """The model and data sections of a seconds-long TIGER run on the toy catalogue in ``folder``."""
    return f"""model:
  class_path: gream_lit.baselines.tiger.Tiger
  init_args: {{d_model: 16, d_ff: 32, d_kv: 8, heads: 2, layers: 1, warmup_steps: 1}}
data:
  class_path: gream_lit.baselines.tiger_data.TigerDataModule
  init_args: {{index_path: {folder / "Toy.index.json"}, data_dir: {folder}, user_buckets: 4, batch_size: 16}}
"""


def test_cli_fit_test_predict(tmp_path: Path, capsys) -> None:
    folder = write_catalog(tmp_path / "toy")
    config = tmp_path / "tiger.yaml"
    config.write_text(
        """
seed_everything: 1
trainer:
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: tiger/val/ndcg@10, mode: max}
"""
        + tiny_tiger_yaml(folder)
    )
    root = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "tiger/test/recall@10" in out
    per_user = [json.loads(line) for line in (root / "test_per_user.jsonl").read_text().splitlines()]
    assert len(per_user) == 30 and all(len(r["items"]) == 10 for r in per_user)
    assert all(r["rank"] == (r["items"].index(r["target"]) if r["target"] in r["items"] else -1) for r in per_user)
    ckpt = next(root.rglob("*.ckpt"))
    restored = Tiger.load_from_checkpoint(ckpt)
    assert restored.item_token_ids[11].tolist() == [2, 5, 10]
    preds = tmp_path / "preds.jsonl"
    assert (
        main(
            [
                "predict",
                "--config",
                str(config),
                "--ckpt_path",
                str(ckpt),
                "--trainer.default_root_dir",
                str(root),
                "--trainer.callbacks+=gream_lit.inference.PredictionWriter",
                f"--trainer.callbacks.path={preds}",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 30
    assert len(lines[0]["items"]) == 10 and lines[0]["titles"][0] == f"item {lines[0]['items'][0]}"
    assert lines[0]["scores"] == sorted(lines[0]["scores"], reverse=True)


def test_command_line_model_flags_beat_checkpoint_hparams(tmp_path: Path, monkeypatch) -> None:
    """Lightning applies a checkpoint's hparams over the config; our CLI keeps explicit --model flags."""
    monkeypatch.chdir(tmp_path)
    folder = write_catalog(tmp_path / "toy")
    config = tmp_path / "tiger.yaml"
    config.write_text(
        f"trainer: {{max_steps: 1, logger: false, enable_progress_bar: false, default_root_dir: {tmp_path / 'run'}}}\n"
        + tiny_tiger_yaml(folder)
    )
    assert (
        main(["fit", "--config", str(config), "--model.init_args.warmup_steps", "3", "--test_after_fit", "false"]) == 0
    )
    ckpt = str(next((tmp_path / "run").rglob("*.ckpt")))
    base = ["validate", "--config", str(config), "--ckpt_path", ckpt]
    assert (
        GreamCLI(args=base, save_config_kwargs={"overwrite": True}).model.hparams.warmup_steps == 3
    )  # from the checkpoint
    for flag in (["--model.init_args.warmup_steps", "7"], ["--model.warmup_steps=7"]):
        assert GreamCLI(args=base + flag, save_config_kwargs={"overwrite": True}).model.hparams.warmup_steps == 7
    assert explicit_model_keys(["--model.init_args.reasoning.n", "3", "--data.x", "--model.lr=1"]) == [
        "model.init_args.reasoning.n",
        "model.init_args.lr",
    ]
