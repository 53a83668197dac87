"""Direct-mode evaluation in a LightningModule, and ``recommend`` on a tiny chat tokenizer."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerFast

from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.inference import DirectEvaluator, direct_prompt, index_token_ids, recommend, tokenize_left_padded
from gream_lit.metrics import ndcg_at_k
from gream_lit.modeling.tiny import tiny_causal_lm

CHAT = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def toy_index() -> SemanticIndex:
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 2], [2, 1], [2, 2]])
    return SemanticIndex(codes=codes, codebook_sizes=[3, 3], style="gream")


def toy_tokenizer(index: SemanticIndex) -> PreTrainedTokenizerFast:
    words = ["<pad>", "<eos>", "<unk>", "user", "assistant", ":", ";", ","]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.add_tokens(index.all_tokens(), special_tokens=True)
    tok.chat_template = CHAT
    return tok


@torch.no_grad()
def exact_scores(model, prompt_ids: list[int], paths: torch.Tensor) -> torch.Tensor:
    seqs = torch.cat([torch.tensor(prompt_ids).expand(len(paths), -1), paths], dim=1)
    logp = model(input_ids=seqs).logits.log_softmax(-1)
    n = len(prompt_ids)
    return logp[:, n - 1 : -1].gather(-1, paths.unsqueeze(-1)).squeeze(-1).sum(-1)


class EvalOnly(L.LightningModule):
    def __init__(self, model, evaluator: DirectEvaluator) -> None:
        super().__init__()
        self.model = model
        self.direct_eval = evaluator

    def validation_step(self, batch, batch_idx):
        self.direct_eval.step(self, self.model, batch["input_ids"], batch["attention_mask"], batch["target"], "val")


def test_evaluator_logs_metrics_of_the_exact_ranking() -> None:
    index = toy_index()
    tok = toy_tokenizer(index)
    model = tiny_causal_lm(len(tok), seed=2)
    histories, targets = [[0, 3], [5], [1, 2, 4]], [4, 0, 2]
    prompts = [direct_prompt(h, index, tok) for h in histories]
    enc = tokenize_left_padded(prompts, tok, "cpu")
    rows = [
        {"input_ids": i, "attention_mask": m, "target": torch.tensor(t)}
        for i, m, t in zip(enc["input_ids"], enc["attention_mask"], targets)
    ]
    evaluator = DirectEvaluator.from_index(index, tok, stage="sft", num_beams=6, ks=(1, 5))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(EvalOnly(model, evaluator), DataLoader(rows, batch_size=3), verbose=False)[0]

    paths = index_token_ids(index, tok)
    ranks = []
    for prompt, target in zip(prompts, targets):
        exact = exact_scores(model, tok(prompt, add_special_tokens=False)["input_ids"], paths)
        ranks.append(int((exact > exact[target]).sum()))
    ranks = torch.tensor(ranks)
    assert logged["sft/val/recall@1"] == pytest.approx((ranks < 1).float().mean().item())
    assert logged["sft/val/recall@5"] == pytest.approx((ranks < 5).float().mean().item())
    assert logged["sft/val/ndcg@5"] == pytest.approx(ndcg_at_k(ranks, 5).mean().item(), abs=1e-6)


def test_tables_are_not_saved_in_checkpoints() -> None:
    index = toy_index()
    evaluator = DirectEvaluator.from_index(index, toy_tokenizer(index), stage="sft", num_beams=10)
    assert not [k for k in evaluator.state_dict() if k.startswith("_")]
    assert evaluator.tables.steps == 2


def test_evaluator_rejects_bad_settings() -> None:
    index = toy_index()
    tok = toy_tokenizer(index)
    with pytest.raises(ValueError, match="exceeds num_beams"):
        DirectEvaluator.from_index(index, tok, stage="sft", num_beams=5, ks=(10,))
    with pytest.raises(ValueError, match="unknown constraint"):
        DirectEvaluator.from_index(index, tok, stage="sft", constraint="greedy")
    assert DirectEvaluator.from_index(index, tok, stage="sft", constraint="per_position").tables.steps == 3


def test_recommend_returns_the_exact_top_k() -> None:
    index = toy_index()
    tok = toy_tokenizer(index)
    model = tiny_causal_lm(len(tok), arch="qwen2", seed=4)
    histories = [[0, 1, 2], [3]]
    result = recommend(model, tok, index, histories, k=3, num_beams=6, batch_size=1)
    assert result.items.shape == (2, 3)
    paths = index_token_ids(index, tok)
    for b, history in enumerate(histories):
        ids = tok(direct_prompt(history, index, tok), add_special_tokens=False)["input_ids"]
        assert result.items[b].tolist() == torch.topk(exact_scores(model, ids, paths), 3).indices.tolist()


def test_missing_index_tokens_are_an_error() -> None:
    index = toy_index()
    tok = toy_tokenizer(SemanticIndex(codes=np.array([[0]]), codebook_sizes=[1]))
    with pytest.raises(ValueError, match="extend the vocabulary"):
        index_token_ids(index, tok)
