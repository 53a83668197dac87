"""SFT loss, the alignment DataModule and the real CLI on a tiny model, catalog and index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gream_lit.alignment.sft_data import AlignmentDataModule, label_index
from gream_lit.alignment.sft_module import SFTModule, assistant_token_loss
from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.experiment.cli import main
from gream_lit.modeling.tiny import save_tiny_backbone, tiny_causal_lm


def test_assistant_token_loss_matches_full_logits_loss():
    model = tiny_causal_lm(50)
    ids = torch.randint(0, 50, (2, 9))
    labels = torch.full_like(ids, -100)
    labels[0, 5:] = ids[0, 5:]
    labels[1, 7:] = ids[1, 7:]
    hidden = model.model(input_ids=ids).last_hidden_state
    ours = assistant_token_loss(hidden, labels, model.lm_head)
    assert torch.allclose(ours, model(input_ids=ids, labels=labels).loss, atol=1e-6)
    with pytest.raises(ValueError, match="no labelled"):
        assistant_token_loss(hidden, torch.full_like(ids, -100), model.lm_head)


def write_toy_dataset(root: Path) -> dict[str, str]:
    """LC-Rec json catalog (12 items, 10 users), a 2-level index and a tiny chat backbone."""
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir(parents=True)
    items = {str(i): {"title": f"Widget {i}", "description": f"Part number {i}." if i % 3 else ""} for i in range(12)}
    inter = {f"u{u}": [int(x) for x in rng.integers(0, 12, size=int(rng.integers(4, 7)))] for u in range(10)}
    (data / "Toy.item.json").write_text(json.dumps(items))
    (data / "Toy.inter.json").write_text(json.dumps(inter))
    SemanticIndex(np.array([[i % 4, i // 4] for i in range(12)]), [4, 3]).to_json(root / "Toy.index.json")
    return {
        "data_dir": str(data),
        "index_path": str(root / "Toy.index.json"),
        "backbone": save_tiny_backbone(root / "tiny", hidden_size=32),
    }


def tiny_config(paths: dict[str, str]) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 3,
            "accelerator": "cpu",
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {
            "class_path": "gream_lit.alignment.sft_module.SFTModule",
            "init_args": {"lr": 3e-3, "num_beams": 4, "embedding_init": "text_mean", "lora": {"r": 2, "alpha": 4}},
        },
        "data": {
            "class_path": "gream_lit.alignment.sft_data.AlignmentDataModule",
            "init_args": {
                **paths,
                "batch_size": 8,
                "eval_batch_size": 8,
                "val_users": 4,
                "max_eval_users": 6,
                "item2index_probe": 5,
            },
        },
    }


def fit_tiny(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """The tiny alignment config fitted through the CLI: (paths, config file, run folder)."""
    paths = write_toy_dataset(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(paths)))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(run)]) == 0
    return paths, config, run


def test_cli_fit_tiny_writes_loadable_handoff(tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from gream_lit.modeling.backbone import load_causal_lm

    paths, _, run = fit_tiny(tmp_path)
    out = capsys.readouterr().out
    assert "sft/test/recall@10" in out and "sft/test/item2index/recall@1" in out
    assert out.count("sft/test/recall@10 ") == 1 and "Test metric" not in out  # one table per test, ours
    resources = json.loads((run / "resources.json").read_text())
    assert set(resources["phases"]) == {"load", "train", "validate", "test"} and resources["peak_rss_gb"] > 0

    assert not (run / "hf" / "model").exists()  # the adapter is the hand-off; no merged copy by default
    tok = AutoTokenizer.from_pretrained(run / "hf" / "adapter")
    assert "<|a_1|>" in tok.get_vocab() and "<|b_3|>" in tok.get_vocab()
    merged = load_causal_lm(str(run / "hf" / "adapter"))
    adapter = AutoPeftModelForCausalLM.from_pretrained(str(run / "hf" / "adapter"))
    ids = tok("Widget 3 <|a_4|><|b_1|>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-4)
    # the trained ID-token rows of the Lightning checkpoint are what the hand-off model holds
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    (rows,) = [v for k, v in state.items() if "embed_tokens" in k and "trainable_tokens_delta" in k]
    id_rows = tok.convert_tokens_to_ids(SemanticIndex.from_json(paths["index_path"]).all_tokens())
    assert torch.allclose(merged.get_input_embeddings().weight[id_rows], rows)
    from safetensors.torch import load_file

    saved = load_file(run / "hf" / "adapter" / "adapter_model.safetensors")
    embedding_rows = [v.shape[0] for k, v in saved.items() if "embed_tokens" in k]
    assert embedding_rows == [len(id_rows)]  # the ID rows only, not a copy of the whole embedding


def test_evaluating_with_a_tokenizer_lacking_id_tokens_fails(tmp_path):
    paths = write_toy_dataset(tmp_path)
    dm = AlignmentDataModule(**paths, extend_vocab=False)
    with pytest.raises(DataError, match="lacks 7 of the index's 7 ID tokens"):
        dm.setup("test")


def test_datamodule_batches(tmp_path):
    dm = AlignmentDataModule(**write_toy_dataset(tmp_path), batch_size=4, val_users=3, max_eval_users=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert ((batch["labels"] != -100) <= batch["attention_mask"].bool()).all()
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"].shape[0] == 3 and val["attention_mask"][:, -1].all()  # left-padded prompts
    dm.setup("test")
    assert len(dm.eval_data["test"]) == 5


def test_token_budget_batches_train_every_row_once_within_the_budget(tmp_path):
    paths = write_toy_dataset(tmp_path)
    dm = AlignmentDataModule(**paths, batch_size=2, max_tokens=400, val_users=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    assert all(b["input_ids"].numel() <= 400 or b["input_ids"].shape[0] == 1 for b in batches)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(dm.train_data)
    assert max(b["input_ids"].shape[0] for b in batches) > 2  # more rows than batch_size where they fit


def test_handoff_is_the_best_monitored_checkpoint_not_the_last(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from safetensors.torch import load_file

    class LastWeights(L.Callback):
        def on_train_end(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items() if "lora_B" in k}

    paths = write_toy_dataset(tmp_path)
    dm = AlignmentDataModule(**paths, batch_size=4, val_users=2)
    module = SFTModule(
        lora={"r": 4, "alpha": 8}, lr=0.05, token_lr=0.5, num_beams=2, stage="align", export_dir=str(tmp_path / "hf")
    )
    # the highest last-step training loss of 3 epochs: the first epoch's, not the last
    best, last = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="align/train/loss", mode="max"), LastWeights()
    trainer = L.Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", callbacks=[best, last],
        default_root_dir=tmp_path / "run", enable_progress_bar=False, logger=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert Path(best.best_model_path).name == "epoch=0-step=2.ckpt"
    state = torch.load(best.best_model_path, weights_only=False)["state_dict"]
    saved = load_file(tmp_path / "hf" / "adapter" / "adapter_model.safetensors")
    name = "layers.0.self_attn.q_proj.lora_B"
    (key,) = [k for k in saved if name in k]
    (ckpt_key,) = [k for k in state if name in k]
    assert torch.equal(saved[key], state[ckpt_key]) and not torch.equal(saved[key], last.state[ckpt_key])


def test_full_finetuning_trains_every_weight_and_exports_model(tmp_path):
    import lightning as L

    from gream_lit.alignment.sft_module import SFTModule

    paths = write_toy_dataset(tmp_path)
    dm = AlignmentDataModule(**paths, batch_size=4, val_users=2)
    module = SFTModule(lora=None, num_beams=2, export_dir=str(tmp_path / "handoff"))
    trainer = L.Trainer(
        fast_dev_run=1, accelerator="cpu", default_root_dir=tmp_path / "run", enable_progress_bar=False, logger=False
    )
    trainer.fit(module, datamodule=dm)
    assert all(p.requires_grad for p in module.model.parameters())
    assert (tmp_path / "handoff" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "handoff" / "adapter").exists()


def test_label_index_loss_equals_the_boolean_mask_loss():
    """The collator's flat label positions select the same hidden states as the mask over labels."""
    torch.manual_seed(0)
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 3, 4, 7, 8]])
    hidden = torch.randn(2, 5, 8)
    head = torch.nn.Linear(8, 10)
    index = label_index(labels)
    assert index.tolist() == [1, 2, 4, 5, 6, 7]  # positions whose next token is labelled, row-major over [2, 4]
    expected = assistant_token_loss(hidden, labels, head)
    assert torch.allclose(assistant_token_loss(hidden, labels, head, index), expected)
    with pytest.raises(ValueError, match="no labelled"):
        label_index(torch.full((2, 4), -100))


def test_token_lr_puts_the_id_token_rows_in_their_own_param_group():
    from gream_lit.modeling.lora import LoraOptions, apply_lora

    base = tiny_causal_lm(40, hidden_size=16, num_layers=1, seed=0)
    module = SFTModule(lr=1e-3, token_lr=2e-2)
    module.model = apply_lora(base, LoraOptions(r=2, alpha=4, target_modules=["q_proj"]), [38, 39])
    rest, tokens = module._param_groups()
    assert tokens["lr"] == 2e-2 and tokens["weight_decay"] == 0.0 and "lr" not in rest
    assert [tuple(p.shape) for p in tokens["params"]] == [(2, 16)]  # the two new rows, tied to the head
    assert all(p.requires_grad for p in rest["params"]) and len(rest["params"]) == 2  # lora_A, lora_B

    module.hparams.token_lr = None
    [single] = module._param_groups()
    assert len(single["params"]) == 3


def test_lora_checkpoints_hold_only_trained_weights_and_test_from_them(tmp_path, capsys):
    _, config, run = fit_tiny(tmp_path)
    fit_out = capsys.readouterr().out
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["state_dict"] and all("lora_" in k or "trainable_tokens_delta" in k for k in saved["state_dict"])
    assert len(saved["frozen_base"]["fingerprint"]) == 16
    assert (
        main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(run)]) == 0
    )
    line = next(x for x in fit_out.splitlines() if x.startswith("sft/test/ndcg@10"))
    test_out = capsys.readouterr().out
    assert line in test_out  # same metrics from the slim checkpoint as after fit
    assert test_out.count("sft/test/ndcg@10 ") == 1  # Lightning's own table is off (--verbose false)
    other = save_tiny_backbone(tmp_path / "other", hidden_size=32, seed=1)
    with pytest.raises(ValueError, match="trained on a base model with fingerprint"):
        main(
            [
                "test",
                "--config",
                str(config),
                "--ckpt_path",
                str(ckpt),
                "--data.init_args.backbone",
                other,
                "--trainer.default_root_dir",
                str(tmp_path / "other_run"),
            ]
        )


def test_a_bfloat16_test_runs_from_the_checkpoint(tmp_path, capsys):
    """``test_dtype: bfloat16`` tests every user from the slim checkpoint with a bfloat16 copy of the model."""
    _, config, run = fit_tiny(tmp_path)
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    out = tmp_path / "bf16"
    assert (
        main(
            [
                "test",
                "--config",
                str(config),
                "--ckpt_path",
                str(ckpt),
                "--model.init_args.test_dtype",
                "bfloat16",
                "--trainer.default_root_dir",
                str(out),
            ]
        )
        == 0
    )
    assert "sft/test/ndcg@10" in capsys.readouterr().out
    assert len((out / "test_per_user.jsonl").read_text().splitlines()) == 6


def test_continuing_a_handoff_with_another_index_is_refused(tmp_path):
    """A later stage must decode the index its starting model learned (the hand-off folder records it)."""
    paths, _, run = fit_tiny(tmp_path)
    adapter = run / "hf" / "adapter"
    AlignmentDataModule(**{**paths, "backbone": str(adapter)}).setup("fit")  # the same index: fine
    learned = json.loads(Path(paths["index_path"]).read_text())
    first, second = sorted(learned)[:2]
    learned[first], learned[second] = learned[second], learned[first]
    other = tmp_path / "other.index.json"
    other.write_text(json.dumps(learned))
    with pytest.raises(DataError, match=r"other\.index\.json is not the index .*adapter was trained with .*2 items"):
        AlignmentDataModule(**{**paths, "backbone": str(adapter), "index_path": str(other)}).setup("fit")
    from gream_lit.rl.policy import load_policy

    with pytest.raises(DataError, match=r"the RL stage's index is not the index .*adapter was trained with"):
        load_policy(str(adapter), SemanticIndex.from_json(other))


def test_a_monitor_of_another_stage_fails_before_training(tmp_path):
    paths = write_toy_dataset(tmp_path)
    cfg = tiny_config(paths)
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "align/val/ndcg@10", "mode": "max"},
        }
    ]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"logs under 'sft/'"):
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")])


def test_the_handoff_is_a_recommender_that_reproduces_the_stage_test(tmp_path):
    """load_recommender(hf/adapter) ranks each test user's history exactly as the stage's own test did."""
    from gream_lit import load_recommender

    paths, _, run = fit_tiny(tmp_path)
    rec = load_recommender(run / "hf" / "adapter")
    dm = AlignmentDataModule(**paths)
    dm.setup("test")
    catalog = dm.catalog
    tested = {r["user"]: r["items"] for r in map(json.loads, (run / "test_per_user.jsonl").read_text().splitlines())}
    samples = [s for s in dm.split.test if catalog.user_ids[s.user] in tested]
    assert len(samples) == len(tested) == 6
    histories = [[catalog.item_ids[i] for i in s.history] for s in samples]
    for sample, ranked in zip(samples, rec.recommend_many(histories, k=4)):
        assert ranked == tested[catalog.user_ids[sample.user]]
    assert len(rec.recommend(histories[0], k=2)) == 2
    with pytest.raises(KeyError, match="not in this recommender's catalogue"):
        rec.recommend(["no-such-item"], k=2)
    card = (run / "hf" / "adapter" / "README.md").read_text()
    assert "load_recommender" in card and "`chat`" in card


def test_direct_prompt_spec_writes_the_evaluation_prompts(tmp_path):
    paths = write_toy_dataset(tmp_path)
    for fmt in ("chat", "compact"):
        dm = AlignmentDataModule(**paths, prompt_format=fmt, max_eval_users=0)
        dm.setup("test")
        spec = dm.direct_prompt()
        by_user = {r["user"]: r["input_ids"] for r in dm.eval_data["test"]}
        assert spec.format == fmt and len(by_user) == len(dm.split.test)
        for s in dm.split.test:
            assert spec.encode(dm.tokenizer, dm.index, s.history) == by_user[s.user]


def test_a_slim_lora_checkpoint_resumes_training_with_its_optimizer_state(tmp_path):
    """Resuming from a checkpoint without the frozen base continues the step count, the adapter and
    the AdamW moments: the second epoch starts from the first one's trained state."""
    _, config, run = fit_tiny(tmp_path)
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    first = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert first["global_step"] == 3 and first["optimizer_states"][0]["state"]
    resumed = tmp_path / "resumed"
    assert (
        main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.max_epochs",
                "2",
                "--ckpt_path",
                str(ckpt),
                "--trainer.default_root_dir",
                str(resumed),
                "--test_after_fit",
                "false",
            ]
        )
        == 0
    )
    (second_ckpt,) = (resumed / "checkpoints").glob("*.ckpt")
    second = torch.load(second_ckpt, map_location="cpu", weights_only=True)
    assert second["global_step"] == 6 and second["epoch"] == 1
    assert second["state_dict"].keys() == first["state_dict"].keys()
    moved = [k for k in first["state_dict"] if not torch.equal(first["state_dict"][k], second["state_dict"][k])]
    assert moved  # trained on from the restored adapter
    steps = [s["step"] for s in second["optimizer_states"][0]["state"].values()]
    assert all(float(step) == 6 for step in steps)  # AdamW moments carried over, not restarted


def test_training_logs_lr_grad_norm_tokens_per_second_and_decoded_examples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = write_toy_dataset(tmp_path)
    cfg = tiny_config(paths)
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(tmp_path)}}
    cfg["trainer"].update(logger=logger, log_every_n_steps=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(config), "--test_after_fit", "false"]) == 0
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "sft/train/lr" in scalars  # 0 at the first warm-up step
    for tag in ("sft/train/tokens_per_s", "sft/train/grad_norm"):
        assert tag in scalars and all(e.value > 0 for e in acc.Scalars(tag))
    assert any(tag.startswith("sft/val/decoded") for tag in acc.Tags()["tensors"])
