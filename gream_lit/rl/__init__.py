"""SRPO reinforcement learning (docs/gream_spec.md §7): rewards, advantages, losses, dynamic sampling."""

from gream_lit.rl.advantages import bgae_advantages, grpo_advantages, passk_bonus
from gream_lit.rl.filtering import filter_groups
from gream_lit.rl.losses import low_var_kl, masked_mean, policy_loss
from gream_lit.rl.rewards import RewardResult, exact_reward, rsvr_reward

__all__ = [
    "RewardResult",
    "bgae_advantages",
    "exact_reward",
    "filter_groups",
    "grpo_advantages",
    "low_var_kl",
    "masked_mean",
    "passk_bonus",
    "policy_loss",
    "rsvr_reward",
]
