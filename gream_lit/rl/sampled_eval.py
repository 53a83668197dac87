"""SRPO's sampled evaluation (docs/gream_spec.md §8.2): ``n`` answers per prompt, ranked by the policy's
total log-prob, and the reward statistics of those samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from gream_lit.inference.reasoning import ReasoningOptions
from gream_lit.inference.sampling import Rollout, RolloutEngine, SamplingConfig
from gream_lit.rl.rewards import RewardResult


def sample_ranked(
    engine: RolloutEngine,
    policy: torch.nn.Module,
    messages: list,
    sampling: SamplingConfig,
    answer_item: Callable[[str], int],
) -> tuple[Rollout, torch.Tensor, list[str]]:
    """``n`` samples per prompt ranked by total log-prob: the rollout, ``[B, n]`` items (``answer_item``
    of each text; ``-1``: no item) and each prompt's best-ranked text."""
    rollout = engine.generate(policy, messages, sampling)
    with torch.no_grad():
        logp = engine.logprobs(policy, rollout)
    mask = rollout.response_mask.bool()
    total = torch.where(mask, logp, 0.0).sum(1)
    total = torch.where(torch.isfinite(total), total, -math.inf).view(-1, sampling.n)
    items = torch.tensor([answer_item(t) for t in rollout.texts]).view(-1, sampling.n)
    order = total.cpu().argsort(dim=1, descending=True)
    best = [rollout.texts[row * sampling.n + int(order[row, 0])] for row in range(order.shape[0])]
    return rollout, items.gather(1, order), best


def sample_scores(results: Sequence[RewardResult], n: int) -> dict[str, torch.Tensor]:
    """Mean reward, exact-hit and format rates of ``n`` samples per prompt, and ``pass@n`` (the share
    of prompts with an exact hit among their samples)."""
    rewards = torch.tensor([r.reward for r in results]).view(-1, n)
    exact = torch.tensor([r.exact for r in results], dtype=torch.float32).view(-1, n)
    return {
        "reward": rewards.mean(),
        "exact": exact.mean(),
        "format": torch.tensor([r.format_ok for r in results], dtype=torch.float32).mean(),
        f"pass@{n}": exact.amax(1).mean(),
    }


def sample_rank_options(sampling: SamplingConfig) -> ReasoningOptions:
    """The reasoning-mode decoding (``inference.reasoning``) that ranks samples as ``sample_ranked`` does."""
    return ReasoningOptions(
        decoder="sample_rank",
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        n=sampling.n,
        think_prefix="",
    )
