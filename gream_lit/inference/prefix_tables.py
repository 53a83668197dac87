"""Dense per-step transition tables for constrained decoding (STATIC-style: one gather per step).

A decode of ``steps`` tokens walks a state machine. At step ``t`` every live hypothesis sits in a state
``s``; ``tokens[t][s, j]`` is its ``j``-th allowed next token (``valid[t][s, j]`` says whether slot ``j``
is used) and ``next_state[t][s, j]`` the state it moves to. Looking up all beams of all users is then a
single indexing op per step, with no Python loop over beams or users.

Two constraints are built on this:

* the **prefix trie** over the catalogue's ID token sequences (shorter IDs padded with EOS so every path
  has the same length); the state after the last step is a leaf and ``leaf_item`` maps it to the item;
* the official GREAM **per-position** rule (docs/gream_spec.md §8.1), kept for number parity: at position ``j`` any
  token seen at ID level ``j`` is allowed, EOS joins the deepest level and is forced one step later. It
  can emit IDs that are no catalogue item, which then map to item ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex, format_token


@dataclass
class PrefixTables:
    """Per-step allowed tokens and transitions; see the module docstring.

    Attributes:
        tokens: per step, ``[n_states, max_branch]`` allowed token ids (unused slots hold a valid id).
        valid: per step, ``[n_states, max_branch]`` whether the slot is an allowed token.
        next_state: per step, ``[n_states, max_branch]`` state at the next step (a leaf after the last).
        scored: per step, ``[n_states]``; ``False`` for states whose forced token adds no log-prob
            (the "already ended" state of the per-position rule).
        leaf_item: ``[n_leaves]`` item of each final state, or ``None`` when outputs are mapped by
            token sequence (per-position rule: use ``sequence_items``).
        sequences: ``{token id tuple (EOS stripped): item}`` for mapping decoded sequences to items.
        eos_token_id: the EOS/padding token id.
    """

    tokens: list[torch.Tensor]
    valid: list[torch.Tensor]
    next_state: list[torch.Tensor]
    scored: list[torch.Tensor]
    leaf_item: torch.Tensor | None
    sequences: dict[tuple[int, ...], int] = field(repr=False)
    eos_token_id: int

    @property
    def steps(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str) -> PrefixTables:
        """Copy of the tables on ``device`` (done once, before decoding)."""

        def move(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [t.to(device) for t in tensors]

        return PrefixTables(
            tokens=move(self.tokens),
            valid=move(self.valid),
            next_state=move(self.next_state),
            scored=move(self.scored),
            leaf_item=None if self.leaf_item is None else self.leaf_item.to(device),
            sequences=self.sequences,
            eos_token_id=self.eos_token_id,
        )

    def sequence_items(self, seqs: torch.Tensor) -> torch.Tensor:
        """Items of decoded token sequences ``[..., steps]`` (EOS and after stripped); ``-1`` if none."""
        flat = seqs.reshape(-1, seqs.shape[-1]).tolist()
        out = []
        for row in flat:
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            out.append(self.sequences.get(tuple(row), -1))
        return torch.tensor(out, dtype=torch.long, device=seqs.device).reshape(seqs.shape[:-1])


def id_vocab(index: SemanticIndex, tokenizer) -> torch.Tensor:
    """Sorted vocabulary ids of every token of ``index`` (used by an item or not) plus EOS: the rows of
    the softmax under ``logits_vocab: ids``. The training loss, the rollouts and every beam search of
    such a model normalise over this one set, so their scores agree."""
    ids = tokenizer.convert_tokens_to_ids(index.all_tokens())
    return torch.tensor(sorted({*ids, tokenizer.eos_token_id}), dtype=torch.long)


def index_token_ids(index: SemanticIndex, tokenizer) -> torch.Tensor:
    """``[n_items, depth]`` vocabulary ids of every item's ID tokens (``-1`` pads shorter IDs).

    Raises if a token is missing from the tokenizer (the vocabulary was not extended with the index).
    """
    vocab = tokenizer.get_vocab()
    table: dict[tuple[int, int], int] = {}
    for level, size in enumerate(index.codebook_sizes):
        for code in range(size):
            tok = format_token(level, code, index.style)
            if tok not in vocab:
                raise DataError(f"tokenizer has no ID token {tok!r}; extend the vocabulary with the index tokens")
            table[(level, code)] = vocab[tok]
    ids = np.full(index.codes.shape, -1, dtype=np.int64)
    for level in range(index.depth):
        col = index.codes[:, level]
        present = col >= 0
        ids[present, level] = [table[(level, int(c))] for c in col[present]]
    return torch.from_numpy(ids)


def _check_ids(item_token_ids: torch.Tensor, eos_token_id: int) -> np.ndarray:
    ids = torch.as_tensor(item_token_ids).cpu().numpy().astype(np.int64)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise DataError(f"item token ids must be a non-empty [n_items, L] array, got shape {ids.shape}")
    present = ids >= 0
    if not present[:, 0].all() or (present[:, 1:] & ~present[:, :-1]).any():
        raise DataError("every item needs a first token and no gaps (-1 pads only the end)")
    if (ids == eos_token_id).any():
        raise DataError(f"EOS token id {eos_token_id} appears inside an item ID")
    return ids


def _sequence_map(ids: np.ndarray) -> dict[tuple[int, ...], int]:
    seqs: dict[tuple[int, ...], int] = {}
    for item, row in enumerate(ids):
        key = tuple(int(t) for t in row if t >= 0)
        if key in seqs:
            raise DataError(f"items {seqs[key]} and {item} share the ID {list(key)}; resolve collisions first")
        seqs[key] = item
    return seqs


def _dense(rows: list[list[tuple[int, int]]], fill_token: int) -> tuple[torch.Tensor, ...]:
    """Pack per-state ``[(token, next_state), ...]`` lists into padded tensors."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), fill_token, dtype=torch.long)
    nxt = torch.zeros((len(rows), width), dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for s, row in enumerate(rows):
        for j, (tok, n) in enumerate(row):
            tokens[s, j], nxt[s, j], valid[s, j] = tok, n, True
    return tokens, valid, nxt


def build_prefix_tables(item_token_ids: torch.Tensor, eos_token_id: int) -> PrefixTables:
    """Prefix-trie tables over ``[n_items, L]`` token ids (``-1`` padded, padded with EOS on the path).

    Children of each state are sorted by token id, so tie order is deterministic.
    """
    ids = _check_ids(item_token_ids, eos_token_id)
    seqs = _sequence_map(ids)
    paths = np.where(ids >= 0, ids, eos_token_id)
    n_steps = paths.shape[1]
    tokens, valid, next_state, scored = [], [], [], []
    state_of_item = np.zeros(len(paths), dtype=np.int64)  # every item starts at the root
    for t in range(n_steps):
        n_states = int(state_of_item.max()) + 1
        keys = sorted({(int(state_of_item[i]), int(paths[i, t])) for i in range(len(paths))})
        child = {key: c for c, key in enumerate(keys)}
        rows: list[list[tuple[int, int]]] = [[] for _ in range(n_states)]
        for (s, tok), c in child.items():
            rows[s].append((tok, c))
        tk, vl, nx = _dense(rows, fill_token=eos_token_id)
        tokens.append(tk)
        valid.append(vl)
        next_state.append(nx)
        scored.append(torch.ones(n_states, dtype=torch.bool))
        state_of_item = np.array([child[(int(state_of_item[i]), int(paths[i, t]))] for i in range(len(paths))])
    leaf_item = torch.full((int(state_of_item.max()) + 1,), -1, dtype=torch.long)
    leaf_item[torch.from_numpy(state_of_item)] = torch.arange(len(paths))
    return PrefixTables(tokens, valid, next_state, scored, leaf_item, seqs, eos_token_id)


def build_per_position_tables(item_token_ids: torch.Tensor, eos_token_id: int) -> PrefixTables:
    """The official per-position rule (docs/gream_spec.md §8.1) as tables with states ``0`` = writing, ``1`` = ended.

    With depth ``D``: position ``j < D`` allows every token seen at level ``j``; EOS is added at
    position ``D - 1`` and is the only choice at position ``D``. Once EOS is written the hypothesis stays
    ended: it keeps emitting EOS, and those steps add no log-prob (HF marks such beams finished).
    """
    ids = _check_ids(item_token_ids, eos_token_id)
    seqs = _sequence_map(ids)
    depth = ids.shape[1]
    ended = [(eos_token_id, 1)]
    tokens, valid, next_state, scored = [], [], [], []
    for j in range(depth + 1):
        level = sorted({int(t) for t in ids[:, j] if t >= 0}) if j < depth else []
        writing = [(tok, 0) for tok in level]
        if j >= depth - 1:
            writing.append((eos_token_id, 1))
        tk, vl, nx = _dense([writing, ended], fill_token=eos_token_id)
        tokens.append(tk)
        valid.append(vl)
        next_state.append(nx)
        scored.append(torch.tensor([True, False]))
    return PrefixTables(tokens, valid, next_state, scored, None, seqs, eos_token_id)
