"""Short-thought rollouts: SRPO in reasoning mode for the curriculum's ``cot_layout: short``.

A rollout is the thought the policy samples after its prompt and ``<think>``, up to and including the
``</think>`` it writes itself within the budget. The answer is not sampled: after the closed thought
(closed by force where the policy did not close it), the same trie-constrained search as the
reasoning-mode test names the item, so the policy is trained on the thoughts, and a thought is judged
by what the model answers after it (``rewards.thought_reward``): the RSVR prefix credit of its top
answer and the log-prob of the target after it. Forced closing tokens are no part of the response:
the policy is neither credited nor blamed for tokens it did not write.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gream_lit.data.padding import pad
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import PrefixTables
from gream_lit.inference.reasoning import append_tokens, left_pad
from gream_lit.inference.sampling import Rollout, RolloutEngine, SamplingConfig, TextStop, padded_positions


def cut_thought(tokens: Sequence[int], decode, close: str, stop_ids: set[int]) -> tuple[list[int], bool]:
    """The sampled ``tokens`` up to and including the first ``close`` their text holds, and whether the
    thought closed; an open thought keeps its tokens up to and with the first of ``stop_ids`` (EOS)."""
    tokens = list(tokens)
    end = next((k + 1 for k, tok in enumerate(tokens) if tok in stop_ids), len(tokens))
    if close in decode(tokens[:end]):
        for k in range(1, end + 1):
            if close in decode(tokens[:k]):
                return tokens[:k], True
    return tokens[:end], False


class ThoughtRolloutEngine(RolloutEngine):
    """``RolloutEngine`` whose responses are short thoughts (``n`` per prompt, full vocabulary).

    Args:
        tokenizer, max_prompt_tokens, forward_batch_size: as ``RolloutEngine``.
        think_open: forced after each prompt (``ReasoningOptions.think_prefix``).
        think_close: what ends a thought (``ReasoningOptions.answer_open``).
    """

    def __init__(
        self,
        tokenizer,
        max_prompt_tokens: int = 768,
        forward_batch_size: int = 16,
        think_open: str = "<think>",
        think_close: str = "</think>",
    ) -> None:
        super().__init__(tokenizer, max_prompt_tokens, forward_batch_size)
        self.open_ids = tokenizer(think_open, add_special_tokens=False)["input_ids"]
        self.close = think_close
        self.close_ids = tokenizer(think_close, add_special_tokens=False)["input_ids"]

    def _decode_tokens(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)

    def generate(self, model: torch.nn.Module, messages: Sequence, sampling: SamplingConfig) -> Rollout:
        """``sampling.n`` thoughts per prompt, each cut after the first ``think_close`` it wrote."""
        device = next(model.parameters()).device
        ids, mask = append_tokens(*self.encode(messages, device), self.open_ids)
        stop = TextStop(self.tokenizer, self.close, ids.shape[1])
        sampled = self.sample(model, ids, mask, sampling, stop)
        stops = {self.tokenizer.eos_token_id}
        rows = [cut_thought(row, self._decode_tokens, self.close, stops)[0] for row in sampled.tolist()]
        response = pad(rows, self.tokenizer.pad_token_id).to(device)
        response_mask = pad([[1] * len(r) for r in rows], 0).to(device)
        texts = [self._decode_tokens([t for t in r if t not in stops]) for r in rows]
        n = sampling.n
        return Rollout(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), response, response_mask, texts, n)

    def closed(self, rollout: Rollout) -> list[bool]:
        """Whether each thought was closed by the policy itself."""
        return [self.close in text for text in rollout.texts]

    def answer_contexts(self, rollout: Rollout) -> list[list[int]]:
        """Per row, what the answer follows: the prompt, the thought without its EOS, and ``think_close``
        where the policy did not write it."""
        eos = self.tokenizer.eos_token_id
        out = []
        for p, pm, r, rm, closed in zip(
            rollout.prompt_ids.tolist(),
            rollout.prompt_mask.tolist(),
            rollout.response_ids.tolist(),
            rollout.response_mask.tolist(),
            self.closed(rollout),
        ):
            thought = [t for t, keep in zip(r, rm) if keep and t != eos]
            out.append([t for t, keep in zip(p, pm) if keep] + thought + ([] if closed else self.close_ids))
        return out


@torch.no_grad()
def answers_after(
    model: torch.nn.Module,
    contexts: list[list[int]],
    targets: list[list[int]],
    tables: PrefixTables,
    pad_id: int,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top, target_logprob)`` per context: the item the constrained search puts first after it, and
    the target ID's log-prob there (the sum over its tokens of the full-vocabulary log-softmax: the
    score the same search gives the target's path)."""
    if len({len(t) for t in targets}) != 1:
        raise ValueError("answers_after needs target IDs of one length (compact prompts: pad_all or reassign)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tops, logps = [], []
    for start in range(0, len(contexts), batch_size):
        ctx, tgt = contexts[start : start + batch_size], targets[start : start + batch_size]
        ids, mask = left_pad(ctx, pad_id, device)
        tops.append(constrained_beam_search(model, ids, mask, tables, 1).items[:, 0])
        ids, mask = left_pad([c + t for c, t in zip(ctx, tgt)], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=padded_positions(mask), use_cache=False).logits
        length = len(tgt[0])
        steps = logits[:, -length - 1 : -1].float().log_softmax(-1)
        logps.append(steps.gather(-1, ids[:, -length:].unsqueeze(-1)).squeeze(-1).sum(-1))
    model.train(was_training)
    return torch.cat(tops), torch.cat(logps)
