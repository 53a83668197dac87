"""SRPO's kept groups (dynamic sampling, docs/gream_spec.md §7.5): what waits for the next update.

Groups whose ``match`` varies accumulate over generation batches until an update takes them; across
processes every rank keeps its own, and ``gather`` merges them in the order one process would have kept
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gream_lit.inference.sampling import Rollout
from gream_lit.rl.distributed import Ranks
from gream_lit.rl.rewards import RewardResult


@dataclass
class Kept:
    """Kept groups waiting for the next update, and the generation that produced them."""

    rollouts: list[Rollout] = field(default_factory=list)
    rewards: list[torch.Tensor] = field(default_factory=list)
    exact: list[torch.Tensor] = field(default_factory=list)
    batch_of: list[int] = field(default_factory=list)  # the generation batch each entry was kept from
    gen_batches: int = 0
    tokens: float = 0.0  # response tokens this rank generated over those batches (kept or not)
    seconds: float = 0.0  # and the seconds that took

    @property
    def groups(self) -> int:
        return sum(len(r) // r.group_size for r in self.rollouts)

    def add(self, rollout: Rollout, keep: torch.Tensor, results: Sequence[RewardResult], seconds: float | None) -> None:
        """One generation batch: its groups where ``keep`` (``[n_groups]``) is set, with their rewards and
        well-formatted exact hits; its tokens and generation ``seconds`` (``None``: not measured) count
        whether kept or not."""
        self.gen_batches += 1
        self.tokens += float(rollout.response_mask.sum())
        self.seconds += seconds or 0.0
        if keep.any():
            rows = torch.nonzero(keep.repeat_interleave(rollout.group_size)).squeeze(1)
            self.rollouts.append(rollout.select(rows.to(rollout.response_ids.device)))
            self.rewards.append(torch.tensor([results[i].reward for i in rows.tolist()]))
            self.exact.append(torch.tensor([results[i].hit for i in rows.tolist()]))
            self.batch_of.append(self.gen_batches)


def gather(kept: Kept, ranks: Ranks, device: torch.device) -> Kept:
    """Every rank's kept groups, in the order one process with all the prompts would have kept them:
    by generation batch, then by rank (each rank holds a contiguous slice of every batch). ``device``:
    where they go when this rank kept none."""
    if ranks.world == 1:
        return kept
    entries = ranks.all_gather_objects(
        [(b, r.to("cpu"), w, e) for b, r, w, e in zip(kept.batch_of, kept.rollouts, kept.rewards, kept.exact)]
    )
    merged = sorted(
        ((b, rank, r, w, e) for rank, part in enumerate(entries) for b, r, w, e in part), key=lambda x: x[:2]
    )
    device = kept.rollouts[0].response_ids.device if kept.rollouts else device
    return Kept(
        rollouts=[r.to(device) for *_, r, _, _ in merged],
        rewards=[w for *_, w, _ in merged],
        exact=[e for *_, e in merged],
        batch_of=[b for b, *_ in merged],
        gen_batches=kept.gen_batches,
        tokens=kept.tokens,
        seconds=kept.seconds,
    )
