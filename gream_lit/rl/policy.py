"""The policy the SRPO stage trains: a causal LM + tokenizer that know the semantic-ID tokens.

A ``tiny`` backbone (random Llama/Qwen2 over a word-level vocabulary) lets tests and debug runs go
through the exact code path of a real model in seconds; any other name goes through
``gream_lit.modeling.backbone.load_backbone`` (HF name, local folder, or a packaged GGUF alias).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from gream_lit.indexing.semantic_index import SemanticIndex
from gream_lit.modeling.backbone import load_backbone
from gream_lit.modeling.lora import LoraOptions, apply_lora
from gream_lit.modeling.tiny import tiny_causal_lm
from gream_lit.modeling.vocab import add_index_tokens, extend_model_vocab, require_index_tokens

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MARKUP_TOKENS = ("<|im_start|>", "<think>", "</think>", "<answer>", "</answer>")
TINY_WORDS = ("system", "user", "assistant", "the", "item", "history", "next", "step", "recommend", ",", ".")


def tiny_chat_tokenizer(words: Sequence[str] = TINY_WORDS) -> PreTrainedTokenizerFast:
    """A word-level ChatML tokenizer with a few dozen tokens; decoding fuses tokens without spaces.

    Fusing keeps ``<answer><|a_1|><|b_2|></answer>`` parseable exactly as a BPE tokenizer decodes it.
    """
    vocab = {"[UNK]": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKUP_TOKENS)})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


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
        tokenizer = tiny_chat_tokenizer(options.pop("words", TINY_WORDS))
        add_index_tokens(tokenizer, index)
        model = tiny_causal_lm(
            len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **options
        )
        token_ids = require_index_tokens(tokenizer, index)
    else:
        model, tokenizer = load_backbone(backbone, dtype=dtype)
        add_index_tokens(tokenizer, index)
        token_ids = extend_model_vocab(model, tokenizer, index)
        log.info("policy %s: vocabulary %d with %d ID tokens", backbone, len(tokenizer), len(token_ids))
    if lora is not None:
        model = apply_lora(model, lora, token_ids)
    return model, tokenizer
