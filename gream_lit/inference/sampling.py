"""Rollouts with HF ``generate``: G sampled responses per prompt and their per-token log-probs.

Sampling settings come only from the SRPO config: the model's own ``generation_config`` (which may
carry a chat model's default temperature or top-k) is swapped out for the duration of each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn (GREAM rollouts: n=10, T=1.0, top-p=1.0, top-k off)."""

    n: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1560

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling settings {self}")


# checkpoint hyperparameters hold it: let torch.load(weights_only=True) rebuild it
torch.serialization.add_safe_globals([SamplingConfig])


@dataclass
class Rollout:
    """``n`` responses per prompt, prompt-major: rows ``g*n .. g*n+n-1`` belong to prompt ``g``.

    ``response_mask`` covers generated tokens up to and including the first end-of-sequence token.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    group_size: int

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with its tensors on ``device``."""
        return Rollout(
            self.prompt_ids.to(device),
            self.prompt_mask.to(device),
            self.response_ids.to(device),
            self.response_mask.to(device),
            self.texts,
            self.group_size,
        )

    def select(self, rows: torch.Tensor) -> Rollout:
        """The rollout restricted to ``rows`` (whole groups, so ``group_size`` still holds)."""
        idx = rows.tolist()
        return Rollout(
            self.prompt_ids[rows],
            self.prompt_mask[rows],
            self.response_ids[rows],
            self.response_mask[rows],
            [self.texts[i] for i in idx],
            self.group_size,
        )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def generation_config(model: torch.nn.Module, config: GenerationConfig):
    base = _unwrap(model)
    saved = base.generation_config
    base.generation_config = config
    try:
        yield
    finally:
        base.generation_config = saved


def padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class RolloutEngine:
    """Encodes chat prompts, samples responses, and scores token log-probs for the PPO update.

    Args:
        tokenizer: the policy's tokenizer (chat template, eos and pad tokens set).
        max_prompt_tokens: prompts longer than this lose their oldest tokens (left truncation).
        forward_batch_size: sequences per forward pass when scoring log-probs.
        vocab: sorted token ids the policy samples from and is scored over (``None`` = all): a model
            trained with a softmax over the ID tokens only (``SFTModule(logits_vocab="ids")``) defines
            no distribution over the other rows, so its rollouts must stay inside that vocabulary.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_tokens: int = 768,
        forward_batch_size: int = 16,
        vocab: torch.Tensor | None = None,
    ):
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the policy tokenizer needs eos and pad tokens")
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.forward_batch_size = forward_batch_size
        self.vocab = vocab

    def encode(
        self, messages: Sequence[list[dict[str, str]] | str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded, left-truncated ``(input_ids, attention_mask)`` of chat prompts (a plain
        string is a prompt text already, e.g. the compact format's)."""
        texts = [
            m
            if isinstance(m, str)
            else self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
            for m in messages
        ]
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            add_special_tokens=False,
            return_tensors="pt",
        )
        return enc.input_ids.to(device), enc.attention_mask.to(device)

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sampling: SamplingConfig,
        stop: StoppingCriteria | None = None,
    ) -> torch.Tensor:
        """``[B * n, T]`` sampled tokens after left-padded prompts (KV cache on, eval mode), stopping a row
        at the end-of-sequence token or where ``stop`` says."""
        config = GenerationConfig(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.n,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
            remove_invalid_values=True,
        )
        was_training = model.training
        model.eval()
        processors = LogitsProcessorList([AllowOnly(self.vocab)] if self.vocab is not None else [])
        with generation_config(model, config):
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stop] if stop is not None else []),
            )
        model.train(was_training)
        return out[:, input_ids.shape[1] :]

    def generate(
        self, model: torch.nn.Module, messages: Sequence[list[dict[str, str]]], sampling: SamplingConfig
    ) -> Rollout:
        """Sample ``sampling.n`` responses for each prompt."""
        device = next(model.parameters()).device
        input_ids, attention_mask = self.encode(messages, device)
        response = self.sample(model, input_ids, attention_mask, sampling)
        mask = self.response_mask(response)
        prompt_ids = input_ids.repeat_interleave(sampling.n, dim=0)
        prompt_mask = attention_mask.repeat_interleave(sampling.n, dim=0)
        texts = self.decode(response, mask)
        return Rollout(prompt_ids, prompt_mask, response, mask, texts, sampling.n)

    def response_mask(self, response: torch.Tensor) -> torch.Tensor:
        """1 on tokens up to and including the first eos; 0 after it."""
        is_eos = response == self.tokenizer.eos_token_id
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        return (~after_eos).long()

    def decode(self, response: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Response text with special tokens kept (ID tokens are special) and the eos dropped."""
        eos = self.tokenizer.eos_token_id
        return [
            self.tokenizer.decode([t for t in row[m.bool()].tolist() if t != eos], skip_special_tokens=False)
            for row, m in zip(response, mask)
        ]

    def logprobs(
        self, model: torch.nn.Module, rollout: Rollout, rows: torch.Tensor | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs ``[len(rows), R]`` under ``model`` (its grad mode), logits / ``temperature``.

        Dividing by the rollout temperature scores tokens under the distribution they were drawn from.
        """
        rows = torch.arange(len(rollout), device=rollout.response_ids.device) if rows is None else rows
        chunks = []
        for start in range(0, len(rows), self.forward_batch_size):
            r = rows[start : start + self.forward_batch_size]
            chunks.append(
                self._logprobs(
                    model,
                    rollout.prompt_ids[r],
                    rollout.prompt_mask[r],
                    rollout.response_ids[r],
                    rollout.response_mask[r],
                    temperature,
                )
            )
        return torch.cat(chunks)

    def _logprobs(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        input_ids = torch.cat([prompt_ids, response_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=padded_positions(attention_mask),
            use_cache=False,
        ).logits
        logits = logits[:, prompt_ids.shape[1] - 1 : -1].float() / temperature
        token_logits = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        if self.vocab is not None:
            logits = logits[..., self.vocab.to(logits.device)]
        return token_logits - torch.logsumexp(logits, dim=-1)


class TextStop(StoppingCriteria):
    """Stops each row once the text it generated (after ``prompt_length``) holds ``text``. HF's own
    ``stop_strings`` rebuilds tables over the whole vocabulary at every call and needs a byte-level or
    SentencePiece tokenizer; decoding the last few tokens works with any."""

    def __init__(self, tokenizer, text: str, prompt_length: int) -> None:
        self.tokenizer, self.text, self.prompt_length = tokenizer, text, prompt_length
        self.window = 2 * len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_length :][:, -self.window :].tolist()
        found = [self.text in self.tokenizer.decode(t, skip_special_tokens=False) for t in tails]
        return torch.tensor(found, dtype=torch.bool, device=input_ids.device)


class AllowOnly(LogitsProcessor):
    """Scores ``-inf`` outside ``vocab``: sampling stays inside the policy's vocabulary."""

    def __init__(self, vocab: torch.Tensor) -> None:
        self.vocab = vocab

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.full_like(scores, float("-inf"))
        vocab = self.vocab.to(scores.device)
        allowed[:, vocab] = scores[:, vocab]
        return allowed


def concat_rollouts(rollouts: Sequence[Rollout], pad_id: int) -> Rollout:
    """Join rollouts of different lengths: prompts padded on the left, responses on the right."""
    if len({r.group_size for r in rollouts}) != 1:
        raise ValueError("rollouts with different group sizes cannot be joined")
    p_len = max(r.prompt_ids.shape[1] for r in rollouts)
    r_len = max(r.response_ids.shape[1] for r in rollouts)

    def pad(x: torch.Tensor, length: int, value: int, left: bool) -> torch.Tensor:
        extra = length - x.shape[1]
        return torch.nn.functional.pad(x, (extra, 0) if left else (0, extra), value=value)

    return Rollout(
        torch.cat([pad(r.prompt_ids, p_len, pad_id, True) for r in rollouts]),
        torch.cat([pad(r.prompt_mask, p_len, 0, True) for r in rollouts]),
        torch.cat([pad(r.response_ids, r_len, pad_id, False) for r in rollouts]),
        torch.cat([pad(r.response_mask, r_len, 0, False) for r in rollouts]),
        [t for r in rollouts for t in r.texts],
        rollouts[0].group_size,
    )
