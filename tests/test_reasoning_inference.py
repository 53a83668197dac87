"""Reasoning-mode decoding on tiny models: valid items always, official sample-and-rank, misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gream_lit.inference.reasoning as reasoning
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.inference.prefix_tables import build_prefix_tables, index_token_ids
from gream_lit.inference.reasoning import (
    NoRepeatNGramInResponse,
    ReasoningOptions,
    cut_at_answer,
    failure_shares,
    reason_then_rank,
    sample_and_rank,
)
from gream_lit.inference.recommend import tokenize_left_padded
from gream_lit.modeling.tiny import tiny_causal_lm, tiny_chat_tokenizer
from gream_lit.modeling.vocab import add_index_tokens

TARGET = 7
THINK = "<think>\n"


@pytest.fixture(scope="module")
def setup():
    """A 12-item, 2-level index and a tiny byte-level chat model knowing its tokens."""
    index = SemanticIndex(np.array([[i % 4, i // 4] for i in range(12)]), [4, 3])
    tok = tiny_chat_tokenizer()
    add_index_tokens(tok, index)
    model = tiny_causal_lm(len(tok), hidden_size=32, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in ("next?", "what comes next after these?")
    ]
    enc = tokenize_left_padded(prompts, tok, "cpu")
    return index, tok, model, enc


@pytest.fixture(scope="module")
def trained(setup):
    """The tiny model overfitted to one reasoning answer for the first prompt (a few seconds)."""
    index, tok, model, enc = setup
    model = tiny_causal_lm(len(tok), hidden_size=32, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    real = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
    prompt = real + tok(THINK, add_special_tokens=False)["input_ids"]
    answer = tok(f"ok\n</think>\n\n<answer>{index.item_string(TARGET)}</answer><|im_end|>", add_special_tokens=False)[
        "input_ids"
    ]
    ids, labels = torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), len(answer)


def test_cut_at_answer_keeps_the_opening_tag_or_forces_it():
    assert cut_at_answer("a\n</think>\n<answer><|a_1|>", "F") == ("a\n</think>\n<answer>", True)
    assert cut_at_answer("no tag", "<answer>") == ("no tag<answer>", False)


def test_options_reject_unknown_decoder():
    with pytest.raises(ValueError, match="unknown reasoning decoder"):
        ReasoningOptions(decoder="beam")


def test_random_model_answers_are_always_catalogue_items(setup):
    index, tok, model, enc = setup
    tables = build_prefix_tables(index_token_ids(index, tok), tok.eos_token_id)
    result = reason_then_rank(
        model, tok, enc["input_ids"], enc["attention_mask"], tables, ReasoningOptions(max_new_tokens=6, num_beams=5)
    )
    assert result.items.shape == (2, 5)
    assert ((result.items >= 0) & (result.items < index.n_items)).all()
    assert all(len(set(row)) == 5 for row in result.items.tolist())  # distinct items, best first
    assert (result.scores[:, :-1] >= result.scores[:, 1:]).all()
    assert not result.answered.any()  # a random model never opens <answer>: it was forced
    assert all(t.startswith(THINK) and "<answer>" in t for t in result.texts)
    assert result.failures[:, 0].tolist() == [1.0, 1.0]  # six tokens never closed the think block

    guarded = ReasoningOptions(max_new_tokens=40, no_repeat_ngram=2)
    out = reasoning._generate(model, tok, enc["input_ids"], enc["attention_mask"], guarded, False, 1, stop=False)
    for row in out.tolist():  # the guard reaches generate: no bigram repeats within a response
        row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        assert len(list(zip(row, row[1:]))) == len(set(zip(row, row[1:])))
    unguarded = reasoning._generate(
        model, tok, enc["input_ids"], enc["attention_mask"], ReasoningOptions(max_new_tokens=40), False, 1, stop=False
    )
    assert any(len(set(zip(r, r[1:]))) < len(r) - 1 for r in unguarded.tolist())  # a random model does repeat


def test_trained_model_reasons_then_answers(setup, trained):
    index, tok, _, enc = setup
    model, n_answer = trained
    tables = build_prefix_tables(index_token_ids(index, tok), tok.eos_token_id)
    opts = ReasoningOptions(max_new_tokens=n_answer + 4, num_beams=3)
    result = reason_then_rank(model, tok, enc["input_ids"][:1], enc["attention_mask"][:1], tables, opts)
    assert result.items[0, 0] == TARGET
    assert result.answered.all() and result.parsed.all()
    sampled = sample_and_rank(
        model,
        tok,
        enc["input_ids"][:1],
        enc["attention_mask"][:1],
        index,
        ReasoningOptions(decoder="sample_rank", n=3, temperature=0.1, max_new_tokens=n_answer + 4),
    )
    assert sampled.items[0].tolist() == [TARGET] * 3 and sampled.parsed.all()


def test_sample_and_rank_parses_ranks_by_logprob_and_counts_misses(setup, monkeypatch):
    index, tok, model, enc = setup
    texts = [
        f"a\n</think>\n\n<answer>{index.item_string(3)}</answer>",
        "I cannot tell",  # unparseable: a miss
        f"b\n</think>\n\n<answer>{index.item_string(5)}</answer>",
    ]
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    width = max(map(len, rows))
    scripted = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    monkeypatch.setattr(reasoning, "_generate", lambda *a, **k: scripted)
    prompt = (
        enc["input_ids"][:1][enc["attention_mask"][:1].bool()].tolist()
        + tok(THINK, add_special_tokens=False)["input_ids"]
    )
    expected = []
    with torch.no_grad():
        for r in rows:
            logp = model(input_ids=torch.tensor([prompt + r])).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            expected.append(logp.gather(1, torch.tensor(r)[:, None]).sum().item())
    result = sample_and_rank(
        model, tok, enc["input_ids"][:1], enc["attention_mask"][:1], index, ReasoningOptions(decoder="sample_rank", n=3)
    )
    order = sorted(range(3), key=lambda i: -expected[i])
    assert result.items[0].tolist() == [[3, -1, 5][i] for i in order]
    assert result.scores[0].tolist() == pytest.approx([expected[i] for i in order], abs=1e-4)
    assert result.parsed[0].tolist() == [[True, False, True][i] for i in order]
    assert result.failures[0].tolist() == pytest.approx([1 / 3, 0, 0, 0])  # "I cannot tell" never closed </think>
    assert result.texts[0] == THINK + texts[order[0]]


def test_failure_shares_average_each_users_outputs():
    shares = failure_shares([None, "no_answer", "unclosed_think", "unclosed_think"], per_user=2)
    assert shares.tolist() == [[0.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_no_repeat_ngram_bans_response_repeats_but_not_prompt_ngrams():
    ban = NoRepeatNGramInResponse(2, prompt_length=3)
    scores = torch.zeros(1, 10)
    # prompt 5 6 5, response 6 5 6: the bigram (6, 5) was generated, so after a 6, token 5 is banned...
    out = ban(torch.tensor([[5, 6, 5, 6, 5, 6]]), scores.clone())
    assert out[0, 5] == -float("inf") and torch.isfinite(out[0, [0, 1, 2, 3, 4, 6, 7, 8, 9]]).all()
    # ...but the prompt's (5, 6) does not ban 6 after the response's first 5
    out = ban(torch.tensor([[5, 6, 5, 7, 5]]), scores.clone())
    assert torch.isfinite(out).all()


def test_options_reject_bad_repetition_settings():
    with pytest.raises(ValueError, match="repetition_penalty"):
        ReasoningOptions(repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        ReasoningOptions(no_repeat_ngram=-1)
