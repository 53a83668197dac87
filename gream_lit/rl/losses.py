"""PPO policy loss with dual clip and the k3 KL estimator (docs/gream_spec.md §7.6), aggregated as a token mean."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is set (0 when nothing is, keeping the graph).

    Masked-out values are selected away, not multiplied by 0, so a NaN there cannot leak in.
    """
    keep = mask.bool()
    return torch.where(keep, x, torch.zeros_like(x)).sum() / keep.sum().clamp(min=1).to(x.dtype)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-mean clipped surrogate loss and the share of tokens where the clip was active.

    Args:
        logp, old_logp: ``[B, T]`` per-token log-probs of the current and the rollout policy.
        advantages: ``[B]`` (one value per sequence, broadcast over tokens) or ``[B, T]``.
        mask: ``[B, T]`` valid response tokens.
        clip_low, clip_high: the ratio is clipped to ``[1 - clip_low, 1 + clip_high]``.
        dual_clip_c: for negative advantages the loss is capped at ``-A * c`` (needs c > 1).
    """
    if dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    dual = torch.minimum(clipped, -advantages * dual_clip_c)
    per_token = torch.where(advantages < 0, dual, clipped)
    clip_fraction = masked_mean((loss2 > loss1).float(), mask)
    return masked_mean(per_token, mask), clip_fraction.detach()


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): ``exp(d) - d - 1`` with ``d = ref - logp``, in [-10, 10]."""
    d = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)
