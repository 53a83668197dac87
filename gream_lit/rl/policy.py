"""The policy the SRPO stage trains: a causal LM + tokenizer that know the semantic-ID tokens.

A ``tiny`` backbone (random Llama/Qwen2 over a word-level vocabulary) lets tests and debug runs go
through the exact code path of a real model in seconds; any other name goes through
``gream_lit.modeling.backbone.load_backbone`` (HF name, local folder, or a packaged GGUF alias).
"""

from __future__ import annotations

import logging

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gream_lit.data.semantic_index import SemanticIndex, check_handoff_index
from gream_lit.modeling.backbone import load_backbone
from gream_lit.modeling.lora import LoraOptions, apply_lora
from gream_lit.modeling.tiny import TINY_WORDS, tiny_causal_lm, tiny_word_tokenizer
from gream_lit.modeling.vocab import add_index_tokens, extend_model_vocab, require_index_tokens

log = logging.getLogger(__name__)


def load_policy(
    backbone: str,
    index: SemanticIndex,
    dtype: str = "float32",
    tiny: dict | None = None,
    lora: LoraOptions | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` with the index's tokens in the vocabulary, LoRA-wrapped if asked.

    Args:
        backbone: ``tiny`` or anything ``load_backbone`` accepts (e.g. the SFT stage's saved folder,
            whose tokenizer already holds the ID tokens; they are then kept as they are).
        index: the semantic-ID index whose tokens the policy writes.
        dtype: torch dtype name for real backbones.
        tiny: keyword arguments for ``tiny_causal_lm`` (arch, hidden_size, num_layers, ...) plus
            ``words``, the tiny tokenizer's word list.
        lora: LoRA options; ``None`` trains all weights.
    """
    if backbone == "tiny":
        options = dict(tiny or {})
        tokenizer = tiny_word_tokenizer(options.pop("words", TINY_WORDS))
        add_index_tokens(tokenizer, index)
        model = tiny_causal_lm(
            len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **options
        )
        token_ids = require_index_tokens(tokenizer, index)
    else:
        check_handoff_index(index, backbone, "the RL stage's index")
        model, tokenizer = load_backbone(backbone, dtype=dtype)
        add_index_tokens(tokenizer, index)
        token_ids = extend_model_vocab(model, tokenizer, index)
        log.info("policy %s: vocabulary %d with %d ID tokens", backbone, len(tokenizer), len(token_ids))
    if lora is not None:
        model = apply_lora(model, lora, token_ids)
    return model, tokenizer
