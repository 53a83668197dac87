"""Compact format, the seqdense objective, the ID-vocabulary loss and search, per-user results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_constrained_beam import EOS, VOCAB, brute_force, left_padded, prompts_for, random_catalog
from test_sft import tiny_config, write_toy_dataset

from gream_lit.alignment.sft_data import AlignmentDataModule
from gream_lit.alignment.sft_module import assistant_token_loss
from gream_lit.data import compact_format as compact
from gream_lit.experiment.cli import main
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import build_prefix_tables
from gream_lit.modeling.tiny import tiny_causal_lm


def test_items_are_padded_to_the_depth_with_eos():
    from gream_lit.data.semantic_index import SemanticIndex
    from gream_lit.modeling.tiny import TINY_WORDS, tiny_word_tokenizer
    from gream_lit.modeling.vocab import add_index_tokens

    index = SemanticIndex(np.array([[0, 0], [1, 1], [2, -1]]), [3, 2])  # item 2 has a one-token ID
    tokenizer = tiny_word_tokenizer(TINY_WORDS)
    add_index_tokens(tokenizer, index)
    a1, a2, a3, b1, b2 = tokenizer.convert_tokens_to_ids(index.all_tokens())
    assert compact.item_rows(tokenizer, index) == [[a1, b1], [a2, b2], [a3, tokenizer.eos_token_id]]


def test_history_prompt_keeps_the_most_recent_items_that_fit():
    rows = [[10, 20], [11, 21], [12, 1]]
    # budget 9 - prefix 1 - answer 2 = 6 tokens = 3 items of 2
    assert compact.history_prompt([5], [0, 1, 2, 0], rows, max_length=9) == [5, 11, 21, 12, 1, 10, 20]
    assert compact.history_prompt([5], [0, 1], rows, max_length=6) == [5, 11, 21]  # one item at least
    with pytest.raises(ValueError, match="no room for one item"):
        compact.history_prompt([5], [0], rows, max_length=4)


def test_dense_row_labels_every_item_token_and_not_the_prefix():
    rows = [[10, 20], [11, 21], [12, 1]]
    row = compact.dense_row([5, 6], [2, 0, 1], rows, max_length=8)
    assert row["input_ids"] == [5, 6, 12, 1, 10, 20, 11, 21]
    assert row["labels"] == [-100, -100, 12, 1, 10, 20, 11, 21]
    assert compact.dense_row([5, 6], [2, 0, 1], rows, max_length=6)["input_ids"] == [5, 6, 10, 20, 11, 21]


def test_id_vocab_loss_is_cross_entropy_over_the_subset_by_hand():
    model = tiny_causal_lm(50)
    ids = torch.randint(0, 50, (2, 6))
    ids[:, 3:] = torch.tensor([[7, 8, 9], [9, 7, 8]])
    labels = torch.full_like(ids, -100)
    labels[:, 3:] = ids[:, 3:]
    vocab = torch.tensor([1, 7, 8, 9])
    hidden = model.model(input_ids=ids).last_hidden_state
    ours = assistant_token_loss(hidden, labels, model.lm_head, vocab=vocab)
    logits = model.lm_head(hidden[:, 2:5])[..., vocab]  # positions 2..4 predict tokens 3..5
    gold = torch.tensor([[1, 2, 3], [3, 1, 2]])  # columns of 7, 8, 9 in vocab
    assert torch.allclose(ours, F.cross_entropy(logits.reshape(-1, 4), gold.reshape(-1)), atol=1e-6)
    labels[0, 4] = 30
    with pytest.raises(ValueError, match=r"outside the ID vocabulary: \[30\]"):
        assistant_token_loss(hidden, labels, model.lm_head, vocab=vocab)


@pytest.mark.parametrize("variable", [False, True])
def test_restricted_vocab_search_is_exact_under_the_restricted_softmax(variable: bool):
    ids = random_catalog(10, 3, seed=4 + variable, variable=variable)
    model = tiny_causal_lm(VOCAB, seed=2).eval()
    vocab = torch.tensor(sorted({*ids[ids >= 0].tolist(), EOS}))
    prompts = prompts_for(3)
    input_ids, mask = left_padded(prompts)
    out = constrained_beam_search(model, input_ids, mask, build_prefix_tables(ids, EOS), num_beams=10, vocab=vocab)
    paths = torch.where(ids >= 0, ids, torch.full_like(ids, EOS))
    restricted = tiny_causal_lm(VOCAB, seed=2).eval()
    with torch.no_grad():  # logits outside the vocabulary at -inf: the restricted softmax
        bias = torch.full((VOCAB,), float("-inf"))
        bias[vocab] = 0.0
        restricted.lm_head.bias = torch.nn.Parameter(bias)
    for b, prompt in enumerate(prompts):
        exact = brute_force(restricted, prompt, paths)
        order = torch.sort(exact, descending=True, stable=True).indices
        assert out.items[b].tolist() == order.tolist()
        torch.testing.assert_close(out.scores[b], exact[order], atol=1e-4, rtol=1e-4)


def test_compact_datamodule_prompts_and_dense_rows(tmp_path):
    paths = write_toy_dataset(tmp_path)
    dm = AlignmentDataModule(
        **paths,
        prompt_format="compact",
        val_users=3,
        max_eval_users=5,
        tasks={
            "seqdense": {"enabled": True},
            **{
                t: {"enabled": False}
                for t in ("seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")
            },
        },
    )
    dm.setup("fit")
    catalog, rows = dm.catalog, dm.item_rows()
    prefix = dm.tokenizer(compact.COMPACT_PREFIX, add_special_tokens=False)["input_ids"]
    assert len(dm.train_data) == catalog.n_users
    first = dm.train_data[0]
    assert first["input_ids"] == prefix + [t for i in catalog.sequences[0][:-2] for t in rows[i]]
    dm.setup("test")
    assert len(dm.eval_data["test"]) == 5
    for row in dm.eval_data["test"]:
        seq = catalog.sequences[row["user"]]
        assert row["input_ids"] == prefix + [t for i in seq[:-1] for t in rows[i]]
        assert row["target"] == seq[-1]
    with pytest.raises(ValueError, match="seqdense needs prompt_format: compact"):
        AlignmentDataModule(**paths, tasks={"seqdense": {"enabled": True}})


def test_max_eval_users_is_a_seeded_random_sample(tmp_path):
    paths = write_toy_dataset(tmp_path)
    users = []
    for seed in (0, 0, 1):
        dm = AlignmentDataModule(**paths, max_eval_users=4, eval_seed=seed)
        dm.load()
        users.append([s.user for s in dm.eval_samples("test")])
    assert users[0] == users[1] and users[0] == sorted(users[0]) and len(users[0]) == 4
    assert users[0] != users[2]


def test_dense_cli_run_writes_per_user_results_over_catalogue_ids(tmp_path, capsys):
    paths = write_toy_dataset(tmp_path)
    cfg = tiny_config(paths)
    cfg["model"]["init_args"]["logits_vocab"] = "ids"
    cfg["model"]["init_args"]["lr_schedule"] = "linear"
    cfg["data"]["init_args"].update(
        prompt_format="compact",
        item2index_probe=0,
        tasks={
            "seqdense": {"enabled": True},
            "item2index": {"enabled": False},
            "index2item": {"enabled": False},
            "fusionseqrec": {"enabled": False},
        },
    )
    config = tmp_path / "dense.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(run)]) == 0
    assert "sft/test/ndcg@10" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "test_per_user.jsonl").read_text().splitlines()]
    items = json.loads((tmp_path / "data" / "Toy.item.json").read_text())
    inter = json.loads((tmp_path / "data" / "Toy.inter.json").read_text())
    assert len(rows) == 6 and all(r["user"] in inter for r in rows)
    for r in rows:
        assert len(r["items"]) == 4 and all(i in items for i in r["items"])
        assert r["target"] == str(inter[r["user"]][-1])
        assert r["rank"] == (r["items"].index(r["target"]) if r["target"] in r["items"] else -1)
