"""Constrained beam search against a brute-force enumeration of every item's sequence log-prob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import PrefixTables, build_per_position_tables, build_prefix_tables
from gream_lit.modeling.tiny import tiny_causal_lm

VOCAB, EOS, PAD = 40, 1, 0


def random_catalog(n_items: int, depth: int, seed: int, variable: bool = False) -> torch.Tensor:
    """Distinct random IDs over tokens 2..VOCAB-1; with ``variable`` some IDs are one token shorter."""
    g = torch.Generator().manual_seed(seed)
    seen, rows = set(), []
    while len(rows) < n_items:
        row = torch.randint(2, 10, (depth,), generator=g).tolist()
        if variable and torch.rand(1, generator=g).item() < 0.4:
            row[-1] = -1
        key = tuple(t for t in row if t >= 0)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return torch.tensor(rows)


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def brute_force(model, prompt: list[int], paths: torch.Tensor) -> torch.Tensor:
    """Sequence log-prob of every path (``[n_items, L]``, already EOS-padded) after an unpadded prompt."""
    seqs = torch.cat([torch.tensor(prompt).expand(len(paths), -1), paths], dim=1)
    logp = model(input_ids=seqs).logits.float().log_softmax(-1)
    n = len(prompt)
    picked = logp[:, n - 1 : -1].gather(-1, paths.unsqueeze(-1)).squeeze(-1)
    return picked.sum(-1)


def prompts_for(seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in (7, 3, 11)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("variable", [False, True])
def test_full_beam_equals_exact_ranking(arch: str, variable: bool) -> None:
    ids = random_catalog(12, 3, seed=1 + variable, variable=variable)
    model = tiny_causal_lm(VOCAB, arch=arch, seed=3)
    tables = build_prefix_tables(ids, EOS)
    prompts = prompts_for(5)
    input_ids, mask = left_padded(prompts)
    out = constrained_beam_search(model, input_ids, mask, tables, num_beams=15)
    paths = torch.where(ids >= 0, ids, torch.full_like(ids, EOS))
    for b, prompt in enumerate(prompts):
        exact = brute_force(model, prompt, paths)
        order = torch.sort(exact, descending=True, stable=True).indices
        assert out.items[b, :12].tolist() == order.tolist()
        torch.testing.assert_close(out.scores[b, :12], exact[order], atol=1e-4, rtol=1e-4)
        assert out.items[b, 12:].tolist() == [-1, -1, -1]
        assert torch.isinf(out.scores[b, 12:]).all()


def test_small_beam_is_top_of_exact_ranking_when_branching_is_wide() -> None:
    """With one ID level the beam is exact for any width: its top-B equals the exact top-B."""
    ids = torch.arange(2, 22).unsqueeze(1)
    model = tiny_causal_lm(VOCAB, arch="llama", seed=7)
    input_ids, mask = left_padded(prompts_for(9))
    out = constrained_beam_search(model, input_ids, mask, build_prefix_tables(ids, EOS), num_beams=4)
    for b, prompt in enumerate(prompts_for(9)):
        exact = brute_force(model, prompt, ids)
        assert out.items[b].tolist() == torch.topk(exact, 4).indices.tolist()


def test_deterministic() -> None:
    ids = random_catalog(10, 3, seed=4)
    model = tiny_causal_lm(VOCAB, arch="qwen2", seed=1)
    input_ids, mask = left_padded(prompts_for(2))
    tables = build_prefix_tables(ids, EOS)
    a = constrained_beam_search(model, input_ids, mask, tables, num_beams=5)
    b = constrained_beam_search(model, input_ids, mask, tables, num_beams=5)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_a_cache_bound_searches_a_few_users_at_a_time_with_the_same_result() -> None:
    ids = random_catalog(12, 3, seed=2)
    model = tiny_causal_lm(VOCAB, arch="llama", seed=4)
    tables = build_prefix_tables(ids, EOS)
    input_ids, mask = left_padded(prompts_for(6))  # prompts of 7, 3 and 11 tokens, padded to 11
    whole = constrained_beam_search(model, input_ids, mask, tables, num_beams=5)
    # 5 beams x 11 tokens = 55 cached tokens per user: a bound of 60 searches one user at a time
    one_by_one = constrained_beam_search(model, input_ids, mask, tables, num_beams=5, max_cache_tokens=60)
    assert torch.equal(whole.items, one_by_one.items) and torch.equal(whole.tokens, one_by_one.tokens)
    torch.testing.assert_close(whole.scores, one_by_one.scores, atol=1e-5, rtol=1e-5)


def test_empty_allowed_set_raises() -> None:
    tables = build_prefix_tables(random_catalog(5, 2, seed=0), EOS)
    tables.valid[1] = torch.zeros_like(tables.valid[1])
    model = tiny_causal_lm(VOCAB, seed=0)
    input_ids, mask = left_padded([[3, 4, 5]])
    with pytest.raises(RuntimeError, match="empty allowed set"):
        constrained_beam_search(model, input_ids, mask, tables, num_beams=3)


def test_colliding_ids_rejected() -> None:
    with pytest.raises(DataError, match="share the ID"):
        build_prefix_tables(torch.tensor([[2, 3], [2, 3]]), EOS)


def test_per_position_rule_emits_invalid_ids_the_trie_never_does() -> None:
    """Catalogue {(2,4,6), (3,5,7)}: per position, (2,5,...) is also legal, and so is EOS after two
    tokens; a model that prefers tokens 2, 5, 6 and EOS makes the per-position search put the non-item
    (2,5) first."""
    ids = torch.tensor([[2, 4, 6], [3, 5, 7]])
    model = tiny_causal_lm(VOCAB, seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight.zero_()
    bias = torch.zeros(VOCAB)
    bias[[2, 5, 6, EOS]] = 5.0

    def hook(_module, _inputs, output):
        return output + bias

    model.lm_head.register_forward_hook(hook)
    input_ids, mask = left_padded([[6, 7]])
    per_pos = constrained_beam_search(model, input_ids, mask, build_per_position_tables(ids, EOS), num_beams=4)
    trie = constrained_beam_search(model, input_ids, mask, build_prefix_tables(ids, EOS), num_beams=4)
    assert per_pos.tokens[0, 0, :2].tolist() == [2, 5]
    assert per_pos.items[0, 0].item() == -1
    assert set(trie.items[0, :2].tolist()) == {0, 1}
    assert trie.items[0, 2:].tolist() == [-1, -1]


def test_per_position_tables_follow_the_official_eos_rule() -> None:
    ids = torch.tensor([[2, 4, 6], [3, 5, -1]])
    tables = build_per_position_tables(ids, EOS)
    allowed = [set(t[0][v[0]].tolist()) for t, v in zip(tables.tokens, tables.valid)]
    assert allowed == [{2, 3}, {4, 5}, {6, EOS}, {EOS}]
    assert tables.sequence_items(torch.tensor([[3, 5, EOS, EOS], [2, 5, EOS, EOS], [2, 4, 6, EOS]])).tolist() == [
        1,
        -1,
        0,
    ]


def test_tables_move_to_device() -> None:
    tables = build_prefix_tables(random_catalog(6, 2, seed=2), EOS).to("cpu")
    assert isinstance(tables, PrefixTables) and tables.steps == 2
    assert sorted(tables.leaf_item.tolist()) == list(range(6))


def test_peft_wrapped_model() -> None:
    from peft import LoraConfig, get_peft_model

    ids = random_catalog(8, 2, seed=6)
    model = get_peft_model(tiny_causal_lm(VOCAB, seed=5), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.eval()
    prompts = prompts_for(8)
    input_ids, mask = left_padded(prompts)
    out = constrained_beam_search(model, input_ids, mask, build_prefix_tables(ids, EOS), num_beams=8)
    for b, prompt in enumerate(prompts):
        exact = brute_force(model, prompt, ids)
        assert out.items[b].tolist() == torch.sort(exact, descending=True, stable=True).indices.tolist()


def test_id_vocab_is_every_index_token_and_eos_even_unused_codes():
    from gream_lit.inference.prefix_tables import id_vocab
    from gream_lit.modeling.tiny import TINY_WORDS, tiny_word_tokenizer
    from gream_lit.modeling.vocab import add_index_tokens

    index = SemanticIndex(np.array([[0, 0], [1, 0]]), [3, 2])  # code 2 of level 0, code 1 of level 1 unused
    tokenizer = tiny_word_tokenizer(TINY_WORDS)
    ids = add_index_tokens(tokenizer, index)
    vocab = id_vocab(index, tokenizer)
    assert vocab.tolist() == sorted({*ids, tokenizer.eos_token_id}) and len(vocab) == 3 + 2 + 1
