"""Group-relative advantages (docs/gream_spec.md §7.4): GRPO z-scores and BGAE = z-score + pass@k bonus.

Rewards arrive flat, ``group_size`` consecutive entries per prompt, as the rollout engine emits them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gream_lit.rl.registry import lookup

EPS = 1e-6


def _grouped(x: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    if group_size < 1 or x.ndim != 1 or x.numel() % group_size:
        raise ValueError(f"{name} of shape {tuple(x.shape)} cannot be split into groups of {group_size}")
    return x.view(-1, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = EPS) -> torch.Tensor:
    """``(R - mean) / (std + eps)`` per group with the unbiased std; a group of one uses mean 0, std 1."""
    r = _grouped(rewards.double(), group_size, "rewards")
    if group_size == 1:
        mean, std = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean, std = r.mean(1, keepdim=True), r.std(1, unbiased=True, keepdim=True)
    return ((r - mean) / (std + eps)).reshape(-1).to(rewards.dtype)


def _comb(n: int, k: int) -> int:
    """Binomial coefficient that is 0 outside ``0 <= k <= n`` (scipy's convention, docs/gream_spec.md §7.4)."""
    return math.comb(n, k) if 0 <= k <= n else 0


def passk_bonus(hits: int, group_size: int, k: int, eps: float = EPS) -> tuple[float, float]:
    """``(bonus on a hit, bonus on a non-hit)`` for ``hits`` exact hits among ``group_size`` samples.

    The analytic pass@k advantage (Chen et al. 2025): rho is the group's unbiased pass@k; a non-hit is
    pushed down by the chance that it sits in a k-subset with no hit. Zero when there are no hits.
    """
    if not 1 <= k <= group_size:
        raise ValueError(f"pass@k needs 1 <= k <= group_size, got k={k}, group_size={group_size}")
    if not 0 <= hits <= group_size:
        raise ValueError(f"hits={hits} outside 0..{group_size}")
    n = group_size
    rho = 1.0 - _comb(n - hits, k) / _comb(n, k)
    sigma = math.sqrt(rho * (1.0 - rho))
    on_hit = (1.0 - rho) / (sigma + eps)
    on_miss = (1.0 - rho - _comb(n - hits - 1, k - 1) / _comb(n - 1, k - 1)) / (sigma + eps)
    return on_hit, on_miss


def bgae_advantages(
    rewards: torch.Tensor,
    group_size: int,
    k: int = 4,
    exact_mask: torch.Tensor | None = None,
    eps: float = EPS,
) -> torch.Tensor:
    """BGAE: GRPO z-score of the dense reward plus the pass@k bonus from exact hits.

    Args:
        rewards: flat ``[n_groups * group_size]`` format-gated rewards.
        group_size: samples per prompt.
        k: the pass@k cut-off (GREAM: 4).
        exact_mask: which samples are exact, well-formatted hits; defaults to ``rewards == 1``.
    """
    hits = (rewards == 1.0) if exact_mask is None else exact_mask.bool()
    hit_groups = _grouped(hits, group_size, "exact_mask")
    bonus = torch.zeros(hit_groups.shape, dtype=torch.float64)
    for g, row in enumerate(hit_groups):
        on_hit, on_miss = passk_bonus(int(row.sum()), group_size, k, eps)
        bonus[g] = torch.where(row, on_hit, on_miss)
    return grpo_advantages(rewards, group_size, eps) + bonus.reshape(-1).to(rewards.dtype)


AdvantageFn = Callable[..., torch.Tensor]
"""``f(rewards, group_size, *, exact, pass_k) -> advantages``: flat ``[n_groups * group_size]`` rewards
and well-formatted exact hits in, one advantage per response out."""


def _bgae(rewards: torch.Tensor, group_size: int, *, exact: torch.Tensor, pass_k: int) -> torch.Tensor:
    return bgae_advantages(rewards, group_size, pass_k, exact)


def _grpo(rewards: torch.Tensor, group_size: int, *, exact: torch.Tensor, pass_k: int) -> torch.Tensor:
    return grpo_advantages(rewards, group_size)


ADVANTAGES: dict[str, AdvantageFn] = {"bgae": _bgae, "grpo": _grpo}


def get_advantage(name: str) -> AdvantageFn:
    """A registered advantage (``bgae``, ``grpo``) or any importable function of the same signature."""
    return lookup(ADVANTAGES, name, "advantage")
