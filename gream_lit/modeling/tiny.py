"""Tiny randomly initialised causal LMs, for tests and debug runs that must take seconds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def tiny_causal_lm(
    vocab_size: int,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> torch.nn.Module:
    """A Llama- or Qwen2-shaped model with random weights (same code paths as the real backbones)."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=2048,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; expected llama or qwen2")
    return model.eval()


CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_chat_tokenizer():
    """A byte-level tokenizer (256 byte tokens, no merges) with ChatML special tokens and template.

    Encodes any text, loads in milliseconds and behaves like a real chat tokenizer for added special
    tokens, so tests need neither the hub nor the SmolLM2 GGUF.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.add_tokens(["<|im_start|>"], special_tokens=True)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


MARKUP_TOKENS = ("<|im_start|>", "<think>", "</think>", "<answer>", "</answer>")
TINY_WORDS = ("system", "user", "assistant", "the", "item", "history", "next", "step", "recommend", ",", ".")


def tiny_word_tokenizer(words: Sequence[str] = TINY_WORDS):
    """A word-level ChatML tokenizer with a few dozen tokens; decoding fuses tokens without spaces.

    Short sequences keep RL learning tests fast, and fusing keeps ``<answer><|a_1|><|b_2|></answer>``
    parseable exactly as a BPE tokenizer decodes it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

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


def save_tiny_backbone(folder, arch: str = "llama", hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """Write a tiny random chat model + tokenizer folder that ``load_backbone`` reads like any HF model."""
    tokenizer = tiny_chat_tokenizer()
    model = tiny_causal_lm(
        len(tokenizer),
        arch,
        hidden_size=hidden_size,
        num_layers=num_layers,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=seed,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
