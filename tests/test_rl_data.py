"""RL prompts (docs/gream_spec.md §7.1) and the rollout engine's padding, masking and sampling isolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.text_format import REASONING_SYSTEM_PROMPT, SYSTEM_PROMPT
from gream_lit.inference.sampling import RolloutEngine, SamplingConfig, concat_rollouts
from gream_lit.rl.policy import load_policy
from gream_lit.rl.rl_data import RLDataModule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    # user A: 7 items -> train targets at i = 4 (i <= T-3), valid i = 5, test i = 6; user B: 4 items -> none but test
    inter = {"A": [0, 1, 2, 3, 4, 5, 6], "B": [6, 5, 4, 3]}
    items = {str(i): {"title": f"item {i}"} for i in range(7)}
    index = {str(i): [f"<|a_{i + 1}|>", f"<|b_{i % 2 + 1}|>"] for i in range(7)}
    (tmp_path / "D.inter.json").write_text(json.dumps(inter))
    (tmp_path / "D.item.json").write_text(json.dumps(items))
    (tmp_path / "D.index.json").write_text(json.dumps(index))
    return tmp_path


def make_dm(data_dir: Path, **kwargs) -> RLDataModule:
    dm = RLDataModule(data_dir=str(data_dir), index_path=str(data_dir / "D.index.json"), **kwargs)
    dm.setup(None)
    return dm


def test_reason_prompts_follow_spec_positions(data_dir: Path) -> None:
    dm = make_dm(data_dir)
    assert [(r["user"], r["item"]) for r in dm.train_set] == [(0, 4)]
    assert [(r["user"], r["item"]) for r in dm.valid_set] == [(0, 5)]
    assert sorted((r["user"], r["item"]) for r in dm.test_set) == [(0, 6), (1, 3)]
    row = dm.train_set[0]
    assert row["target"] == "<|a_5|><|b_1|>"
    system, user = row["messages"]
    assert system == {"role": "system", "content": REASONING_SYSTEM_PROMPT}
    assert "<|a_1|><|b_1|>, <|a_2|><|b_2|>, <|a_3|><|b_1|>, <|a_4|><|b_2|>" in user["content"]


def test_direct_prompts_carry_the_sft_system_turn_and_batches_are_lists(data_dir: Path) -> None:
    dm = make_dm(data_dir, mode="direct", eval_batch_size=8)
    assert dm.train_set[0]["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}  # as alignment SFT
    bare = make_dm(data_dir, mode="direct", system_prompt="")  # GREAM's bare instruction
    assert [m["role"] for m in bare.train_set[0]["messages"]] == ["user"]
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"messages", "target", "item", "user", "history"} and len(batch["target"]) == 2


def test_rl_data_errors_name_the_problem(data_dir: Path) -> None:
    with pytest.raises(DataError, match="index_path is required"):
        RLDataModule(data_dir=str(data_dir), index_path="")
    with pytest.raises(DataError, match="no training prompt"):
        make_dm(data_dir, min_history=10)


@pytest.fixture
def policy(data_dir: Path):
    index = SemanticIndex.from_json(data_dir / "D.index.json")
    return load_policy("tiny", index, tiny={"hidden_size": 32, "num_layers": 1, "num_heads": 2})


def test_logprobs_ignore_left_padding(policy) -> None:
    model, tokenizer = policy
    engine = RolloutEngine(tokenizer, forward_batch_size=8)
    messages = [
        [{"role": "user", "content": "the item"}],
        [{"role": "user", "content": "the item , next step history"}],
    ]
    torch.manual_seed(0)
    rollout = engine.generate(model, messages, SamplingConfig(n=2, max_new_tokens=5))
    batched = engine.logprobs(model, rollout)
    for row in range(len(rollout)):
        keep = rollout.prompt_mask[row].bool()
        single = concat_rollouts([rollout.select(torch.tensor([row]))], tokenizer.pad_token_id)
        single.prompt_ids, single.prompt_mask = single.prompt_ids[:, keep], single.prompt_mask[:, keep]
        alone = engine.logprobs(model, single)
        m = rollout.response_mask[row].bool()
        assert torch.allclose(batched[row][m], alone[0][m], atol=1e-5)


def test_sampling_ignores_model_generation_config(policy) -> None:
    model, tokenizer = policy
    model.generation_config = GenerationConfig(max_new_tokens=1, do_sample=False, top_k=1)
    engine = RolloutEngine(tokenizer)
    torch.manual_seed(0)
    rollout = engine.generate(model, [[{"role": "user", "content": "the"}]], SamplingConfig(n=16, max_new_tokens=4))
    assert rollout.response_ids.shape[1] > 1
    assert len(set(map(tuple, rollout.response_ids.tolist()))) > 1  # sampled, not greedy
    assert model.generation_config.max_new_tokens == 1  # restored


def test_response_mask_stops_after_first_eos(policy) -> None:
    _, tokenizer = policy
    engine = RolloutEngine(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = torch.tensor([[5, eos, pad, pad], [5, 6, 7, 8], [eos, 5, eos, 5]])
    assert engine.response_mask(ids).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert engine.decode(ids, engine.response_mask(ids))[2] == ""


def test_compact_prompts_are_the_bare_id_text(data_dir: Path) -> None:
    dm = make_dm(data_dir, mode="direct", prompt_format="compact")
    row = dm.train_set[0]
    assert row["messages"] == "History:<|a_1|><|b_1|><|a_2|><|b_2|><|a_3|><|b_1|><|a_4|><|b_2|>"
    short = make_dm(data_dir, mode="reason", prompt_format="compact")  # the short-thought curriculum's prompts
    assert short.train_set[0]["messages"] == row["messages"]
    assert short.reasoning_prompt(64) == short.direct_prompt(64)
    index = json.loads((data_dir / "D.index.json").read_text())
    index["0"] = ["<|a_1|>"]
    (data_dir / "D.index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="need IDs of one length"):
        make_dm(data_dir, mode="direct", prompt_format="compact")


def test_check_inputs_reads_only_an_index_that_exists(data_dir: Path) -> None:
    """A pipeline calls it before earlier stages run: a missing index is not yet written, chat prompts
    take IDs of any length, compact ones do not."""
    path = data_dir / "D.index.json"
    RLDataModule.check_inputs({"index_path": str(path), "prompt_format": "compact"})
    RLDataModule.check_inputs({"index_path": str(data_dir / "later.index.json"), "prompt_format": "compact"})
    index = json.loads(path.read_text())
    index["0"] = ["<|a_1|>"]
    path.write_text(json.dumps(index))
    RLDataModule.check_inputs({"index_path": str(path)})
    with pytest.raises(
        DataError, match=r"D\.index\.json: compact RL prompts need IDs of one length, but .* \[1, 2\] tokens"
    ):
        RLDataModule.check_inputs({"index_path": str(path), "prompt_format": "compact"})


def test_restricted_vocab_rollouts_stay_inside_and_score_over_it(policy) -> None:
    model, tokenizer = policy
    vocab = torch.tensor(
        sorted(tokenizer.convert_tokens_to_ids([f"<|a_{i}|>" for i in range(1, 8)] + ["<|b_1|>"]))
        + [tokenizer.eos_token_id]
    )
    engine = RolloutEngine(tokenizer, vocab=vocab)
    torch.manual_seed(0)
    rollout = engine.generate(model, ["History:<|a_1|><|b_1|>"], SamplingConfig(n=8, max_new_tokens=3))
    kept = rollout.response_ids[rollout.response_mask.bool()]
    assert set(kept.tolist()) <= set(vocab.tolist())
    # every token of the vocabulary at the first response position: probabilities sum to 1 over it
    first = rollout.select(torch.zeros(len(vocab), dtype=torch.long))
    first.response_ids = vocab.unsqueeze(1).clone()
    first.response_mask = torch.ones_like(first.response_ids)
    assert engine.logprobs(model, first)[:, 0].exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_srpo_logits_vocab_needs_direct_mode() -> None:
    from gream_lit.rl.srpo_module import SRPOModule

    with pytest.raises(ValueError, match="'ids' with mode 'direct'"):
        SRPOModule(mode="reason", logits_vocab="ids")
