"""Dynamic sampling (docs/gream_spec.md §7.5, DAPO "filter groups"): drop prompt groups that carry no signal."""

from __future__ import annotations

import torch


def filter_groups(match: torch.Tensor, group_size: int) -> torch.Tensor:
    """Boolean ``[n_groups]``: keep a group iff the population std of its ``match`` values is > 0.

    A group whose samples all score the same has zero advantage everywhere, so it would only dilute
    the token mean. ``max > min`` is the same test without the float noise of computing a std.
    """
    if group_size < 1 or match.ndim != 1 or match.numel() % group_size:
        raise ValueError(f"match of shape {tuple(match.shape)} cannot be split into groups of {group_size}")
    groups = match.view(-1, group_size)
    return groups.amax(1) > groups.amin(1)
