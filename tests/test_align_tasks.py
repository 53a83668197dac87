"""Alignment task builders, chat encoding (labels, truncation) and length bucketing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from gream_lit.alignment.sft_data import BucketBatchSampler, budget_batches, encode_sample, shortest_encoding
from gream_lit.alignment.tasks import TaskContext, build_alignment_samples, load_side_info, parse_task_specs
from gream_lit.alignment.tasks.builders import clean_title
from gream_lit.curriculum.cot import CotSample
from gream_lit.data.catalog import Catalog
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import leave_one_out
from gream_lit.data.text_format import TaskSample, format_response, parse_reasoning
from gream_lit.modeling.tiny import tiny_chat_tokenizer
from gream_lit.modeling.vocab import add_index_tokens

ONLY = {"seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain"}


def toy_catalog() -> Catalog:
    items = [{"title": f"Widget {i}!", "description": f"Thing {i}." if i % 2 else ""} for i in range(6)]
    sequences = [[0, 1, 2, 3, 4], [5, 4, 3], [1, 3, 5, 0, 2, 4]]
    return Catalog("toy", sequences, items, [str(i) for i in range(6)], ["u0", "u1", "u2"])


def toy_context(side_info=None) -> TaskContext:
    cat = toy_catalog()
    index = SemanticIndex(np.array([[i % 3, i // 3] for i in range(6)]), [3, 2])
    sids = [index.item_string(i) for i in range(6)]
    return TaskContext(cat, sids, leave_one_out(cat).train, side_info or {})


def only(*enabled: str, **overrides) -> dict:
    cfg = {name: {"enabled": name in enabled} for name in ONLY}
    for name, o in overrides.items():
        cfg[name].update(o)
    return parse_task_specs(cfg)


def count(samples, task):
    return sum(s.task == task for s in samples)


def test_task_counts_and_switches():
    ctx = toy_context()
    n_train = len(ctx.train)  # prefixes of seq[:-2]: 2 + 0 + 3
    assert n_train == 5
    samples = build_alignment_samples(ctx, only("seqrec", "item2index", "index2item", seqrec={"prompt_samples": 2}))
    assert count(samples, "seqrec") == 2 * n_train
    assert count(samples, "item2index") == count(samples, "index2item") == 6 * 2
    assert count(samples, "fusionseqrec") == 0
    fused = build_alignment_samples(ctx, only("fusionseqrec", fusionseqrec={"data_samples": 3}), passes=2)
    assert len(fused) == 2 * 3


def test_item_tasks_respect_missing_descriptions():
    samples = build_alignment_samples(toy_context(), only("index2item", index2item={"prompt_samples": 9}))
    # even items have no description: only the 3 title templates apply; odd items use all 9
    assert len(samples) == 3 * 3 + 3 * 9
    no_desc = [s for s in samples if s.fields["item"] == toy_context().sids[0]]
    assert {s.response for s in no_desc} == {"Widget 0"}


def test_seqrec_sample_content():
    ctx = toy_context()
    s = build_alignment_samples(ctx, only("seqrec"))[0]
    assert s.history == (ctx.sids[0],) and s.response == ctx.sids[1]
    messages = s.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == "You are a helpful assistant."
    assert ctx.sids[0] in messages[1]["content"] and "{" not in messages[1]["content"]


def test_unknown_task_or_option_is_an_error():
    with pytest.raises(ValueError, match="unknown alignment task 'seqrecc'"):
        parse_task_specs({"seqrecc": {}})
    with pytest.raises(ValueError, match="unknown option"):
        parse_task_specs({"seqrec": {"samples": 3}})


def test_side_info_tasks_skip_users_without_it(tmp_path, caplog):
    cat = toy_catalog()
    path = tmp_path / "toy.user.json"
    path.write_text(
        json.dumps(
            {
                "user_explicit_preference": {"u2": ["Likes widgets.", "Long-term: gadgets", "Short-term: more"]},
                "user_vague_intention": {"train": {"u2": {"querys": ["I want a small one.", "Compact and light."]}}},
            }
        )
    )
    side = load_side_info(path, cat)
    assert set(side) == {2} and len(side[2].queries) == 2
    with caplog.at_level(logging.INFO):
        samples = build_alignment_samples(toy_context(side), only("itemsearch", "preferenceobtain"))
    assert count(samples, "itemsearch") == count(samples, "preferenceobtain") == 1
    search = next(s for s in samples if s.task == "itemsearch")
    assert search.response == toy_context().sids[cat.sequences[2][-3]]
    assert "2 of 3 users have no teacher side information" in caplog.text


def test_clean_title():
    assert clean_title("`Fancy` pipette, 10 ml!?") == "Fancy pipette, 10 ml"


def _encoded_tokenizer():
    tok = tiny_chat_tokenizer()
    index = SemanticIndex(np.array([[i % 3, i // 3] for i in range(6)]), [3, 2])
    add_index_tokens(tok, index)
    return tok, [index.item_string(i) for i in range(6)]


def test_labels_mask_system_and_user():
    tok, sids = _encoded_tokenizer()
    sample = TaskSample("seqrec", "After {history}, next?", (sids[0], sids[1]), sids[2])
    enc = encode_sample(tok, sample, "You are a helpful assistant.", max_length=512)
    labelled = [i for i, label in zip(enc["input_ids"], enc["labels"]) if label != -100]
    assert tok.decode(labelled) == sids[2] + "<|im_end|>"
    start = enc["labels"].index(labelled[0])
    assert all(label == -100 for label in enc["labels"][:start])
    assert tok.decode(enc["input_ids"][:start]).endswith("<|im_start|>assistant\n")


def test_overlong_prompt_drops_oldest_history_only():
    tok, sids = _encoded_tokenizer()
    history = tuple(sids[i % 6] for i in range(10))
    sample = TaskSample("seqrec", "Items bought: {history}. What comes next?", history, sids[5])
    full = encode_sample(tok, sample, None, max_length=10_000)
    per_item = len(tok(sids[0] + ", ", add_special_tokens=False)["input_ids"])
    enc = encode_sample(tok, sample, None, max_length=len(full["input_ids"]) - 3 * per_item)
    text = tok.decode(enc["input_ids"])
    assert "Items bought: " + ", ".join(history[3:]) + ". What comes next?" in text
    assert text.endswith(sids[5] + "<|im_end|>")
    # not even one history item fits: the sample is dropped, never cut inside the instruction
    assert encode_sample(tok, sample, None, max_length=20) is None


def test_an_overlong_cot_sample_drops_its_oldest_history_items_from_prompt_and_rewrite():
    tok, sids = _encoded_tokenizer()
    history = tuple(sids[:5])
    rewrite = [sids[0], sids[3], sids[4]]
    sample = CotSample("cot", "Bought: {history}. Next?", history, format_response("Step 1: x.", rewrite, sids[5]))
    full = encode_sample(tok, sample, None, max_length=10_000)
    per_item = len(tok(sids[0] + ", ", add_special_tokens=False)["input_ids"])
    # two items too long for the full prompt and rewrite: the oldest item leaves both
    enc = encode_sample(tok, sample, None, max_length=len(full["input_ids"]) - 2 * per_item + 1)
    text = tok.decode(enc["input_ids"])
    assert "Bought: " + ", ".join(history[1:]) + ". Next?" in text
    answer = tok.decode([i for i, label in zip(enc["input_ids"], enc["labels"]) if label != -100])
    parsed = parse_reasoning(answer)
    assert parsed.ok and parsed.rewrite == [sids[3], sids[4]] and parsed.answer == sids[5]
    # the shortest keeps one item in the prompt (three fewer) and one in the rewrite (one fewer)
    assert len(enc["input_ids"]) == shortest_encoding(tok, sample, None) + 4 * per_item
    assert encode_sample(tok, sample, None, max_length=shortest_encoding(tok, sample, None) - 1) is None


def test_bucket_sampler_covers_all_and_groups_lengths():
    lengths = [i * 7 % 50 for i in range(100)]
    sampler = BucketBatchSampler(lengths, batch_size=10, window=10, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(100)) and len(sampler) == 10
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.2 * sum(lengths)
    assert list(sampler) != batches  # every pass (epoch) reshuffles
    sampler.set_epoch(0)
    assert list(sampler) == batches


def test_budget_batches_cut_sorted_rows_at_the_padded_token_budget():
    lengths = [3, 3, 4, 4, 9, 20]
    # [3,3,4]: 3 rows x 4 = 12 <= 12; a 4th row of 4 would pad to 16; 9 alone; 20 exceeds the budget alone
    assert budget_batches(range(6), lengths, 12) == [[0, 1, 2], [3], [4], [5]]
    assert budget_batches(range(6), lengths, 100) == [[0, 1, 2, 3, 4], [5]]


def test_bucket_sampler_with_a_token_budget_fills_batches_by_tokens():
    lengths = [i * 7 % 50 + 1 for i in range(200)]
    sampler = BucketBatchSampler(lengths, batch_size=10, window=20, seed=1, max_tokens=120)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(len(b) * max(lengths[i] for i in b) <= 120 for b in batches)
    assert max(len(b) for b in batches) > 10  # short rows share a step beyond batch_size
    sampler.set_epoch(0)
    assert len(sampler) == len(batches) and list(sampler) == batches
    # Lightning counts the batches once: every epoch has as many, with other members
    again = list(sampler)
    assert len(again) == len(batches) and sorted(map(sorted, again)) != sorted(map(sorted, batches))
    with pytest.raises(ValueError, match="max_tokens"):
        BucketBatchSampler(lengths, batch_size=10, max_tokens=0)
