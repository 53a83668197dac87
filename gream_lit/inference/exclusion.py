"""Items a user must not be recommended (``exclude_seen``), as per-step masks over the prefix trie.

Filtering a decoded top-K afterwards leaves fewer than K items whenever a seen item was among them,
so the beams themselves must avoid the excluded items: a trie state is closed to a user when every
item below it is excluded, and the search never enters a closed state. The masks are built bottom-up,
from the leaves (one per item) to the root, one gather per trie level.
"""

from __future__ import annotations

import torch

from gream_lit.inference.prefix_tables import PrefixTables


def closed_states(tables: PrefixTables, exclude: torch.Tensor) -> list[torch.Tensor]:
    """Per step ``t``, ``[B, n_states(t+1)]`` whether each state reached after step ``t`` is closed to
    each user: its items are all in that user's row of ``exclude``.

    Args:
        tables: prefix-trie tables (``build_prefix_tables``); the per-position rule has no leaf per item,
            so it cannot exclude items and is refused.
        exclude: ``[B, H]`` catalogue indices per user, ``-1`` padded (order and repeats do not matter).

    Raises:
        ValueError: per-position tables, or a user for whom every item is excluded.
    """
    if tables.leaf_item is None:
        raise ValueError("excluding items needs the prefix-trie constraint (constraint: trie), not per_position")
    if exclude.dim() != 2:
        raise ValueError(f"exclude must be [B, H] item indices, got shape {tuple(exclude.shape)}")
    n_items = int(tables.leaf_item.max()) + 1
    blocked_item = torch.zeros((exclude.shape[0], n_items + 1), dtype=torch.bool, device=exclude.device)
    rows = exclude.clamp(min=-1, max=n_items - 1).long()
    blocked_item.scatter_(1, torch.where(rows < 0, n_items, rows), True)  # column n_items absorbs the padding
    closed = blocked_item[:, tables.leaf_item.to(exclude.device)]
    out = [closed]
    for t in range(tables.steps - 1, 0, -1):
        child_closed = closed[:, tables.next_state[t].to(exclude.device)]  # [B, n_states(t), width]
        open_slot = tables.valid[t].to(exclude.device) & ~child_closed
        closed = ~open_slot.any(-1)
        out.append(closed)
    root = closed[:, tables.next_state[0].to(exclude.device)] | ~tables.valid[0].to(exclude.device)
    none_left = root.flatten(1).all(-1)
    if none_left.any():
        users = none_left.nonzero().flatten().tolist()
        raise ValueError(f"every catalogue item is excluded for users at batch rows {users[:5]}")
    return out[::-1]


def drop_seen(items: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """Sampled decoders rank what they sampled, with no search to mask: ``[B, n]`` ranked items with
    each row's ``exclude`` items removed and the later ones moved up (``-1`` fills the tail). A ``-1``
    already there (a sample that named no item) keeps its rank: it was a wasted slot, not a seen item."""
    if exclude is None:
        return items
    exclude = exclude.to(items.device)
    hit = (items.unsqueeze(-1) == exclude.unsqueeze(1)).any(-1) & (items >= 0)
    order = torch.sort(hit.to(torch.int8), dim=1, stable=True).indices
    return torch.where(hit, torch.full_like(items, -1), items).gather(1, order)


def open_slots(closed_next: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
    """``[B, b, M]`` whether each slot of each beam leads to a state still open to its user;
    ``closed_next``: ``[B, n_states(t+1)]`` (one entry of ``closed_states``), ``next_state``: ``[B, b, M]``."""
    batch = next_state.shape[0]
    return ~closed_next.gather(1, next_state.reshape(batch, -1)).view_as(next_state)
