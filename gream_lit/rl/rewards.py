"""Verifiable rewards for generated recommendations (docs/gream_spec.md §7.3).

RSVR gives partial credit for every leading semantic-ID level the answer gets right, because exact
hits are too sparse for a group-relative advantage to learn from early in RL; a format gate makes
the policy keep the answer parseable. Both GREAM ``<|a_1|>`` and LC-Rec ``<a_0>`` token styles work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from gream_lit.data.catalog import Catalog
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.rl.registry import lookup

# Credit for m matching leading levels (m = 1, 2, 3, >= 4), below 1.0 so an exact hit is strictly best.
PREFIX_CREDIT = (0.5, 0.707, 0.866, 0.95)
MODES = ("reason", "direct")
STRIP_TOKENS = ("<|im_end|>", "<|endoftext|>")

_TOKEN = r"(?:<\|[a-z]_\d+\|>|<[a-z]_\d+>)"
_TOKEN_RE = re.compile(_TOKEN)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_RE = re.compile(rf"<answer>((?:{_TOKEN})+)</answer>")


@dataclass(frozen=True)
class RewardResult:
    """``reward`` = format gate x ``match``; ``match`` is ungated (dynamic sampling filters on it)."""

    reward: float
    match: float
    format_ok: bool
    exact: bool
    matched_levels: int

    @property
    def hit(self) -> bool:
        """A well-formatted exact hit: what the BGAE pass@k bonus counts (``exact`` alone is ungated)."""
        return self.exact and self.format_ok


def sid_tokens(text: str) -> list[str]:
    """The semantic-ID tokens of ``text`` in order (either style)."""
    return _TOKEN_RE.findall(text)


def _direct_re(min_len: int, max_len: int) -> re.Pattern:
    return re.compile(rf"((?:{_TOKEN}){{{min_len},{max_len}}})")


def parse_answer(response: str, mode: str = "reason", direct_len: tuple[int, int] = (4, 5)) -> str | None:
    """The predicted ID string: the first all-ID ``<answer>`` (reason) or first run of IDs (direct)."""
    if mode == "reason":
        m = _ANSWER_RE.search(response)
    elif mode == "direct":
        m = _direct_re(*direct_len).search(response)
    else:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {MODES}")
    return m.group(1) if m else None


def prefix_match(predicted: str, target: str) -> tuple[float, int]:
    """``(M, m)``: 1.0 on an exact string match, else the credit of the ``m`` matching leading levels."""
    if predicted == target:
        return 1.0, len(sid_tokens(target))
    pred, gold = sid_tokens(predicted), sid_tokens(target)
    m = 0
    for p, g in zip(pred, gold):
        if p != g:
            break
        m += 1
    return (PREFIX_CREDIT[min(m, len(PREFIX_CREDIT)) - 1] if m else 0.0), m


def _clean(response: str, strip: tuple[str, ...]) -> str:
    for tok in strip:
        response = response.replace(tok, "")
    return response


def rsvr_reward(
    response: str,
    target: str,
    mode: str = "reason",
    direct_len: tuple[int, int] = (4, 5),
    strip: tuple[str, ...] = STRIP_TOKENS,
) -> RewardResult:
    """Residual-sensitive verifiable reward of one decoded response against the target ID string.

    Args:
        response: decoded completion, special tokens kept.
        target: the target item's ID tokens concatenated (``"<|a_3|><|b_1|>..."``).
        mode: ``reason`` needs ``<think>...</think>`` and ``<answer>IDs</answer>``; ``direct`` needs a
            run of ``direct_len`` consecutive ID tokens (GREAM: 4-5).
        direct_len: inclusive (min, max) ID length accepted in direct mode.
        strip: end-of-turn strings removed before parsing.
    """
    if not sid_tokens(target):
        raise ValueError(f"target {target!r} holds no semantic-ID tokens")
    text = _clean(response, strip)
    answer = parse_answer(text, mode, direct_len)
    format_ok = answer is not None and (mode == "direct" or _THINK_RE.search(text) is not None)
    match, levels = prefix_match(answer, target) if answer is not None else (0.0, 0)
    return RewardResult(
        reward=match if format_ok else 0.0,
        match=match,
        format_ok=format_ok,
        exact=match == 1.0,
        matched_levels=levels,
    )


def exact_reward(
    response: str,
    target: str,
    mode: str = "reason",
    direct_len: tuple[int, int] = (4, 5),
    strip: tuple[str, ...] = STRIP_TOKENS,
) -> RewardResult:
    """0/1 exact-match reward (the "w/o RSVR" ablation): same parsing and gate, no partial credit."""
    full = rsvr_reward(response, target, mode, direct_len, strip)
    match = 1.0 if full.exact else 0.0
    return RewardResult(
        reward=match if full.format_ok else 0.0,
        match=match,
        format_ok=full.format_ok,
        exact=full.exact,
        matched_levels=full.matched_levels,
    )


def retrieval_credit(target_logprob: float, n_items: int) -> float:
    """``1 + log p / ln(n_items)`` clipped to [0, 1]: 0 for a target no likelier than a uniform guess
    over the catalogue, 1 for a certain one."""
    if n_items < 2:
        raise ValueError(f"retrieval credit needs a catalogue of at least 2 items, got {n_items}")
    return min(1.0, max(0.0, 1.0 + target_logprob / math.log(n_items)))


def thought_reward(
    closed: bool,
    answer: str | None,
    target: str,
    target_logprob: float,
    n_items: int,
    retrieval_weight: float = 1.0,
) -> RewardResult:
    """Reward of one short thought (``thought_rollouts``): the RSVR prefix credit of the top answer the
    constrained search gives after it, plus ``retrieval_weight`` x the target's ``retrieval_credit``
    there, gated on the policy closing its thought. The retrieval term varies between a group's thoughts
    even when none of their answers hits, so the group still carries a learning signal. ``match`` is the
    gated reward too: closing the thought is part of what a thought learns, so a group whose thoughts
    differ only in closing is kept by dynamic sampling.

    Args:
        closed: the policy wrote ``</think>`` itself within the budget (the format gate).
        answer: the top answer's ID string (``None``: no answer).
        target: the target item's ID string.
        target_logprob: the target ID's log-prob after the thought.
        n_items: catalogue size (the retrieval credit's scale).
        retrieval_weight: weight of the retrieval credit (0: RSVR on the answer alone).
    """
    match, levels = prefix_match(answer, target) if answer is not None else (0.0, 0)
    reward = match + retrieval_weight * retrieval_credit(target_logprob, n_items) if closed else 0.0
    return RewardResult(reward=reward, match=reward, format_ok=closed, exact=match == 1.0, matched_levels=levels)


@dataclass(frozen=True)
class RewardContext:
    """Everything a reward may look at beside the response: the target, the prompt's history (item rows,
    oldest first), the user, and the run's semantic index and catalogue (``None`` outside a trainer), so
    a reward can credit, say, a novel item or a category match without new plumbing."""

    target: str
    mode: str = "reason"
    direct_len: tuple[int, int] = (4, 5)
    item: int | None = None
    user: int | None = None
    history: tuple[int, ...] = ()
    index: SemanticIndex | None = None
    catalog: Catalog | None = None


def prompt_contexts(
    batch: dict, mode: str, direct_len: tuple[int, int], index: SemanticIndex, catalog: Catalog
) -> list[RewardContext]:
    """The context of each prompt of an ``RLDataModule`` batch (``target``, ``item``, ``user``, ``history``)."""
    return [
        RewardContext(
            target=target,
            mode=mode,
            direct_len=direct_len,
            item=batch["item"][i],
            user=batch["user"][i],
            history=tuple(batch["history"][i]),
            index=index,
            catalog=catalog,
        )
        for i, target in enumerate(batch["target"])
    ]


RewardFn = Callable[[str, RewardContext], RewardResult]


def _rsvr(response: str, ctx: RewardContext) -> RewardResult:
    return rsvr_reward(response, ctx.target, ctx.mode, ctx.direct_len)


def _exact(response: str, ctx: RewardContext) -> RewardResult:
    return exact_reward(response, ctx.target, ctx.mode, ctx.direct_len)


REWARDS: dict[str, RewardFn] = {"rsvr": _rsvr, "exact": _exact}


def get_reward(name: str) -> RewardFn:
    """A registered reward (``rsvr``, ``exact``) or any importable ``f(response, ctx) -> RewardResult``."""
    return lookup(REWARDS, name, "reward")
