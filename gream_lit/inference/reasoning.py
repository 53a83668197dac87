"""Reasoning-mode recommendation (docs/gream_spec.md §8.2): the model thinks, then names the item.

Two decoders over the same left-padded reasoning prompts (a forced ``<think>\\n`` is appended, as the
official evaluation does):

* ``reason_then_rank`` (ours): HF ``generate`` writes the reasoning (greedy or sampled) until it has
  opened ``<answer>``; where it did not within ``max_new_tokens``, the answer opening is forced. The
  ID is then decoded by the trie-constrained beam search conditioned on prompt + reasoning, so every
  answer is a catalogue item and the beams give a full top-K list from one reasoning chain.
* ``sample_and_rank`` (official): ``n`` independent samples; each sample's item is the ID in its first
  ``<answer>`` tag (none, or not a catalogue item: a miss), ranked by the total log-prob of the
  whole completion, duplicates kept.

``curriculum.reasoning_module.ReasoningSFTModule`` runs one of these when its data module's
``eval_mode`` is ``reasoning``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jsonargparse.typing import PositiveInt  # a range the preflight checks
from transformers import GenerationConfig, LogitsProcessorList, NoRepeatNGramLogitsProcessor, StoppingCriteriaList

from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.text_format import ANSWER_INTRO, PARSE_FAILURES, parse_reasoning
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import PrefixTables
from gream_lit.inference.sampling import Rollout, RolloutEngine, TextStop, generation_config

ANSWER_OPEN = "<answer>"
DECODERS = ("constrained", "sample_rank")
LAYOUTS = ("official", "short")
SHORT_OPEN, SHORT_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ReasoningOptions:
    """How reasoning-mode outputs are drawn.

    Args:
        decoder: ``constrained`` (reasoning, then trie-constrained beams) or ``sample_rank`` (official).
        layout: ``official`` (think, rewrite, ``<answer>ID</answer>``) or ``short``
            (``<think>thought</think>ID``, ``CurriculumDataModule(cot_layout="short")``): the thought
            stops at ``</think>``, which is closed where the model did not within ``max_new_tokens``, and
            the ID follows at once (``constrained`` only); ``think_prefix`` and ``forced_answer`` then
            default to ``<think>`` and ``</think>``.
        max_new_tokens: reasoning budget per output (official: 1560).
        do_sample: sample the reasoning of ``constrained`` (``sample_rank`` always samples).
        temperature, top_p: sampling settings (official ``sample_rank``: 0.7, 0.9).
        n: samples per user of ``sample_rank`` (= ranked list length; official: 10).
        num_beams: answer beams of ``constrained`` (= ranked list length).
        repetition_penalty: HF's penalty on every token already in prompt or output (1.0 = off).
        no_repeat_ngram: ban repeating any n-gram of this many tokens within the generated text only
            (0 = off). Greedy decoding of a small model can loop on a phrase until the budget runs out,
            leaving the think block unclosed; HF's own ``no_repeat_ngram_size`` would also ban n-grams
            of the prompt, whose system text spells out the step headers the model must write.
        think_prefix: text forced after the generation prompt.
        forced_answer: appended to a reasoning that never opened ``<answer>``.
        forward_batch_size: sequences per forward pass when scoring samples.
        answer_cache_tokens: bound on users x beams x (prompt + thinking) tokens of the constrained
            answer search, which copies each user's long context to its beams
            (``constrained_beam_search(max_cache_tokens=...)``); larger batches answer a few users at a
            time, with the same results. 20,000 tokens hold about 0.9 GB of SmolLM2 KV cache in fp32.
    """

    decoder: str = "constrained"
    layout: str = "official"
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    n: PositiveInt = 10
    num_beams: PositiveInt = 10
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0
    think_prefix: str | None = None
    forced_answer: str | None = None
    forward_batch_size: PositiveInt = 16
    answer_cache_tokens: int | None = 20_000

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown reasoning decoder {self.decoder!r}; expected one of {DECODERS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown reasoning layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.layout == "short" and self.decoder != "constrained":
            raise ValueError("reasoning layout 'short' answers with the constrained decoder only")
        short = self.layout == "short"
        if self.think_prefix is None:
            object.__setattr__(self, "think_prefix", SHORT_OPEN if short else "<think>\n")
        if self.forced_answer is None:
            object.__setattr__(self, "forced_answer", SHORT_CLOSE if short else "\n\n" + ANSWER_INTRO + ANSWER_OPEN)
        if min(self.max_new_tokens, self.n, self.num_beams) < 1:
            raise ValueError(f"max_new_tokens, n and num_beams must be >= 1, got {asdict(self)}")
        if self.repetition_penalty <= 0 or self.no_repeat_ngram < 0:
            raise ValueError(f"repetition_penalty must be > 0 and no_repeat_ngram >= 0, got {asdict(self)}")

    @property
    def answer_open(self) -> str:
        """Where the reasoning ends and the constrained ID begins."""
        return SHORT_CLOSE if self.layout == "short" else ANSWER_OPEN


# checkpoint hyperparameters hold it: let torch.load(weights_only=True) rebuild it
torch.serialization.add_safe_globals([ReasoningOptions])


@dataclass
class ReasoningResult:
    """Ranked items per user and what the model wrote.

    Attributes:
        items: ``[B, K]`` item indices, best first; ``-1`` is a miss (unparseable or unknown answer).
        scores: ``[B, K]`` ranking scores (answer log-prob for ``constrained``, completion log-prob
            for ``sample_rank``).
        texts: per user, the best-ranked completion (reasoning and answer).
        parsed: ``[B, S]`` whether each output parses (closed think block, closed ID-only answer);
            ``S`` is 1 for ``constrained`` (one chain per user) and ``n`` for ``sample_rank`` (ranked order).
        answered: ``[B, S]`` whether the model opened ``<answer>`` itself (not forced).
        failures: ``[B, len(PARSE_FAILURES)]`` share of each user's outputs failing for each cause.
    """

    items: torch.Tensor
    scores: torch.Tensor
    texts: list[str]
    parsed: torch.Tensor
    answered: torch.Tensor
    failures: torch.Tensor


def failure_shares(failures: list[str | None], per_user: int) -> torch.Tensor:
    """``[B, len(PARSE_FAILURES)]``: per user, the share of its ``per_user`` outputs failing for each cause."""
    onehot = torch.tensor([[float(f == cause) for cause in PARSE_FAILURES] for f in failures])
    return onehot.view(-1, per_user, len(PARSE_FAILURES)).mean(1)


class NoRepeatNGramInResponse(NoRepeatNGramLogitsProcessor):
    """HF's n-gram ban applied to the generated tokens only (the prompt's n-grams stay allowed)."""

    def __init__(self, ngram_size: int, prompt_length: int) -> None:
        super().__init__(ngram_size)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return super().__call__(input_ids[:, self.prompt_length :], scores)


def append_tokens(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts with the same ``tokens`` appended to every row."""
    extra = torch.tensor(tokens, dtype=input_ids.dtype, device=input_ids.device).expand(input_ids.shape[0], -1)
    return torch.cat([input_ids, extra], 1), torch.cat([attention_mask, torch.ones_like(extra)], 1)


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def cut_at_answer(text: str, forced_answer: str, answer_open: str = ANSWER_OPEN) -> tuple[str, bool]:
    """Reasoning up to and including the first ``answer_open``, and whether the model wrote it itself;
    otherwise the whole text with ``forced_answer`` appended."""
    at = text.find(answer_open)
    if at >= 0:
        return text[: at + len(answer_open)], True
    return text + forced_answer, False


def sid_lookup(index: SemanticIndex) -> dict[str, int]:
    return {index.item_string(i): i for i in range(index.n_items)}


@torch.no_grad()
def _generate(
    model, tokenizer, input_ids, attention_mask, opts: ReasoningOptions, sample: bool, n: int, stop: bool
) -> torch.Tensor:
    """Generated tokens ``[B * n, T]`` (prompt-major), with the model's own generation defaults swapped out."""
    sampling = {"temperature": opts.temperature, "top_p": opts.top_p, "top_k": 0} if sample else {}
    config = GenerationConfig(
        do_sample=sample,
        **sampling,
        max_new_tokens=opts.max_new_tokens,
        num_return_sequences=n,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=opts.repetition_penalty,
        use_cache=True,
    )
    processors = LogitsProcessorList()
    if opts.no_repeat_ngram:
        processors.append(NoRepeatNGramInResponse(opts.no_repeat_ngram, input_ids.shape[1]))
    with generation_config(model, config):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList(
                [TextStop(tokenizer, opts.answer_open, input_ids.shape[1])] if stop else []
            ),
        )
    return out[:, input_ids.shape[1] :]


def _decode(engine: RolloutEngine, response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(response, mask, texts)``; an empty generation becomes one padding token (an empty text)."""
    if response.shape[1] == 0:
        response = torch.full((response.shape[0], 1), engine.tokenizer.pad_token_id, device=response.device)
    mask = engine.response_mask(response)
    return response, mask, engine.decode(response, mask)


@torch.no_grad()
def reason_then_rank(
    model: torch.nn.Module,
    tokenizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tables: PrefixTables,
    opts: ReasoningOptions = ReasoningOptions(),
    exclude: torch.Tensor | None = None,
) -> ReasoningResult:
    """One reasoning chain per user, then ``opts.num_beams`` constrained answers (always valid items,
    none of ``exclude``: ``constrained_beam_search``)."""
    engine = RolloutEngine(tokenizer)
    prefix = tokenizer(opts.think_prefix, add_special_tokens=False)["input_ids"]
    ids, mask = append_tokens(input_ids, attention_mask, prefix)
    _, _, texts = _decode(engine, _generate(model, tokenizer, ids, mask, opts, opts.do_sample, 1, stop=True))
    cut = [cut_at_answer(t, opts.forced_answer, opts.answer_open) for t in texts]
    rows = []
    for prompt, m, (reasoning, _) in zip(input_ids.tolist(), attention_mask.tolist(), cut):
        real = [tok for tok, keep in zip(prompt, m) if keep]
        rows.append(real + tokenizer(opts.think_prefix + reasoning, add_special_tokens=False)["input_ids"])
    answer_ids, answer_mask = left_pad(rows, tokenizer.pad_token_id, input_ids.device)
    beams = constrained_beam_search(
        model,
        answer_ids,
        answer_mask,
        tables,
        opts.num_beams,
        max_cache_tokens=opts.answer_cache_tokens,
        exclude=exclude,
    )
    best = tokenizer.batch_decode(beams.tokens[:, 0], skip_special_tokens=False)
    eos = tokenizer.eos_token or ""
    answered = [ok for _, ok in cut]
    if opts.layout == "short":
        full = [reasoning + b.replace(eos, "") for (reasoning, _), b in zip(cut, best)]
        ok, failures = answered, [None if a else "unclosed_think" for a in answered]
    else:
        full = [reasoning + b.replace(eos, "") + "</answer>" for (reasoning, _), b in zip(cut, best)]
        parsed = [parse_reasoning(t) for t in full]
        ok, failures = [p.ok for p in parsed], [p.failure for p in parsed]
    return ReasoningResult(
        items=beams.items,
        scores=beams.scores,
        texts=[opts.think_prefix + t for t in full],
        parsed=torch.tensor([[p] for p in ok]),
        answered=torch.tensor([[a] for a in answered]),
        failures=failure_shares(failures, 1),
    )


@torch.no_grad()
def sample_and_rank(
    model: torch.nn.Module,
    tokenizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    index: SemanticIndex,
    opts: ReasoningOptions = ReasoningOptions(decoder="sample_rank"),
    lookup: dict[str, int] | None = None,
) -> ReasoningResult:
    """The official reasoning evaluation: ``opts.n`` samples per user ranked by completion log-prob."""
    lookup = lookup if lookup is not None else sid_lookup(index)
    engine = RolloutEngine(tokenizer, forward_batch_size=opts.forward_batch_size)
    prefix = tokenizer(opts.think_prefix, add_special_tokens=False)["input_ids"]
    ids, mask = append_tokens(input_ids, attention_mask, prefix)
    response = _generate(model, tokenizer, ids, mask, opts, True, opts.n, stop=False)
    response, response_mask, texts = _decode(engine, response)
    rollout = Rollout(
        ids.repeat_interleave(opts.n, 0), mask.repeat_interleave(opts.n, 0), response, response_mask, texts, opts.n
    )
    scores = (engine.logprobs(model, rollout) * response_mask).sum(-1).view(-1, opts.n)
    parsed = [parse_reasoning(t) for t in texts]
    items = torch.tensor([lookup.get(p.answer, -1) for p in parsed], device=scores.device).view(-1, opts.n)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    best = (order[:, 0] + torch.arange(order.shape[0], device=order.device) * opts.n).tolist()
    return ReasoningResult(
        items=items.gather(1, order),
        scores=scores.gather(1, order),
        texts=[opts.think_prefix + texts[i] for i in best],
        parsed=torch.tensor([p.ok for p in parsed], device=order.device).view(-1, opts.n).gather(1, order),
        answered=torch.tensor([ANSWER_OPEN in t for t in texts], device=order.device).view(-1, opts.n).gather(1, order),
        failures=failure_shares([p.failure for p in parsed], opts.n),
    )
