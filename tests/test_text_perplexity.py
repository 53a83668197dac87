"""Text perplexity: batching and padding change nothing, and the sum is the hand-computed one."""

from __future__ import annotations

import math

import torch

from gream_lit.inference.text_perplexity import perplexity, text_nll
from gream_lit.modeling.tiny import tiny_causal_lm, tiny_chat_tokenizer


def test_text_nll_is_the_sum_of_each_texts_own_token_losses():
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    texts = ["w1 w2 w3 w4", "w5", "w6 w7"]
    expected, tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        expected -= logp.gather(1, ids[0, 1:, None]).sum().item()
        tokens += ids.shape[1] - 1
    for batch_size in (1, 3):  # padded batches score what single texts score
        nll, count = text_nll(model, tok, texts, batch_size=batch_size)
        assert count == tokens
        assert math.isclose(nll, expected, rel_tol=1e-5)


def test_perplexity_is_exp_of_the_mean_token_nll():
    assert math.isclose(perplexity(2 * math.log(5.0), 2), 5.0)
    assert math.isnan(perplexity(0.0, 0))
