"""Inference: exact constrained beam search over semantic IDs, direct-mode evaluation, ``recommend``.

Public API (what modules and scripts code against):

``build_prefix_tables(item_token_ids, eos_token_id) -> PrefixTables``
    Dense per-step trie tables from ``[n_items, L]`` vocabulary ids (``-1`` pads shorter IDs, which
    are then EOS-padded on their path). ``build_per_position_tables`` gives the official per-position
    rule (docs/gream_spec.md §8.1). ``index_token_ids(index, tokenizer)`` turns a ``SemanticIndex`` into those ids.
    ``tables.to(device)`` once before decoding.

``constrained_beam_search(model, input_ids, attention_mask, tables, num_beams=10) -> BeamResult``
    Left-padded ``[B, T]`` prompts (causal LM, plain or peft) or encoder inputs (encoder-decoder);
    returns ``items [B, num_beams]`` (best first, ``-1`` = no hypothesis / not an item),
    ``scores`` (sum of token log-probs, ``-inf`` for missing) and ``tokens [B, num_beams, L]``.

``DirectEvaluator(item_token_ids, eos_token_id, stage, num_beams=10, ks=(1, 5, 10), constraint="trie")``
    or ``DirectEvaluator.from_index(index, tokenizer, stage, ...)``: an ``nn.Module`` to hold on a
    LightningModule. In ``validation_step``/``test_step`` call
    ``self.direct_eval.step(self, model, input_ids, attention_mask, target, split="val"|"test")``;
    it decodes, updates and logs ``<stage>/<split>/{recall,ndcg,mrr}@k``. ``rank(model, ids, mask)``
    returns the ``BeamResult`` alone (for ``predict_step``).

``PredictionWriter(path)``: Lightning callback writing ``predict_step`` outputs
    ``{"user", "items", "scores"}`` as jsonl with raw ids and titles.

``recommend(model, tokenizer, index, histories, k=10, ...) -> BeamResult``
    Top-k items for raw histories (catalogue indices) via the direct-mode chat prompt.

``load_recommender(folder) -> Recommender`` (``bundle``): a stage's hand-off folder (model or adapter,
    ``index.json``, ``gream_bundle.json``) as an object whose ``recommend(raw_item_ids, k)`` returns raw
    item ids, with the stage's own prompt layout and exact search; ``write_bundle`` writes the folder.
"""

from gream_lit.inference.constrained_beam import BeamResult, constrained_beam_search
from gream_lit.inference.direct_eval import DirectEvaluator, PredictionWriter
from gream_lit.inference.prefix_tables import (
    PrefixTables,
    build_per_position_tables,
    build_prefix_tables,
    index_token_ids,
)
from gream_lit.inference.recommend import direct_prompt, recommend, tokenize_left_padded

__all__ = [
    "BeamResult",
    "DirectEvaluator",
    "PredictionWriter",
    "PrefixTables",
    "build_per_position_tables",
    "build_prefix_tables",
    "constrained_beam_search",
    "direct_prompt",
    "index_token_ids",
    "recommend",
    "tokenize_left_padded",
]
