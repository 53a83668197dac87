"""``exclude_seen`` inside the constrained search: hand-built trie masks, and the search against the exact
ranking with the excluded items removed (the top-K stays full)."""

from __future__ import annotations

import pytest
import torch
from test_constrained_beam import EOS, VOCAB, brute_force, left_padded, prompts_for, random_catalog

from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.exclusion import closed_states
from gream_lit.inference.prefix_tables import build_per_position_tables, build_prefix_tables
from gream_lit.modeling.tiny import tiny_causal_lm

# items 0..3 with IDs (2,5) (2,6) (3,5) (4,-1): root children 2, 3, 4; state "2" holds items 0 and 1
IDS = torch.tensor([[2, 5], [2, 6], [3, 5], [4, -1]])


def test_a_state_closes_only_when_every_item_below_it_is_excluded() -> None:
    tables = build_prefix_tables(IDS, EOS)
    closed = closed_states(tables, torch.tensor([[0, -1], [0, 1], [2, 3]]))
    # after step 0 the states are the first tokens 2, 3, 4 (children sorted by token id)
    assert closed[0].tolist() == [[False, False, False], [True, False, False], [False, True, True]]
    # leaves: one per item, in the order of their (state, token) keys: items 0, 1, 2, 3
    leaf_of = tables.leaf_item.tolist()
    assert [closed[1][0, leaf_of.index(i)].item() for i in range(4)] == [True, False, False, False]
    assert [closed[1][1, leaf_of.index(i)].item() for i in range(4)] == [True, True, False, False]


def test_excluding_everything_or_per_position_tables_is_refused() -> None:
    with pytest.raises(ValueError, match="every catalogue item is excluded for users at batch rows \\[1\\]"):
        closed_states(build_prefix_tables(IDS, EOS), torch.tensor([[0, -1, -1, -1], [3, 2, 1, 0]]))
    with pytest.raises(ValueError, match="constraint: trie"):
        closed_states(build_per_position_tables(IDS, EOS), torch.tensor([[0]]))


@pytest.mark.parametrize("variable", [False, True])
def test_search_with_exclusion_is_the_exact_ranking_without_those_items(variable: bool) -> None:
    ids = random_catalog(12, 3, seed=4 + variable, variable=variable)
    model = tiny_causal_lm(VOCAB, arch="llama", seed=3)
    tables = build_prefix_tables(ids, EOS)
    prompts = prompts_for(6)
    input_ids, mask = left_padded(prompts)
    exclude = torch.tensor([[0, 5, 11, -1], [3, 3, -1, -1], [1, 2, 4, 7]])
    out = constrained_beam_search(model, input_ids, mask, tables, num_beams=12, exclude=exclude)
    paths = torch.where(ids >= 0, ids, torch.full_like(ids, EOS))
    for b, prompt in enumerate(prompts):
        banned = {i for i in exclude[b].tolist() if i >= 0}
        exact = brute_force(model, prompt, paths)
        order = [i for i in torch.sort(exact, descending=True, stable=True).indices.tolist() if i not in banned]
        assert out.items[b, : len(order)].tolist() == order
        assert out.items[b, len(order) :].tolist() == [-1] * (12 - len(order))


def test_top_k_stays_full_and_chunked_search_agrees() -> None:
    ids = random_catalog(30, 2, seed=2)
    model = tiny_causal_lm(VOCAB, arch="qwen2", seed=1)
    tables = build_prefix_tables(ids, EOS)
    input_ids, mask = left_padded(prompts_for(2))
    plain = constrained_beam_search(model, input_ids, mask, tables, num_beams=5)
    exclude = plain.items[:, :3]  # the three best items of each user
    out = constrained_beam_search(model, input_ids, mask, tables, num_beams=5, exclude=exclude)
    assert (out.items >= 0).all()
    for b in range(len(exclude)):
        assert not set(out.items[b].tolist()) & set(exclude[b].tolist())
    chunked = constrained_beam_search(
        model, input_ids, mask, tables, num_beams=5, exclude=exclude, max_cache_tokens=5 * input_ids.shape[1]
    )
    assert torch.equal(chunked.items, out.items)
