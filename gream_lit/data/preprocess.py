"""Raw interaction events -> Catalog, and Catalog -> LC-Rec json files (docs/gream_spec.md §2.2).

The pipeline: drop events whose item has no metadata, de-duplicate (user, item) keeping the earliest
event, iterative k-core, order each user's items chronologically, remap ids densely. Every step is
deterministic: equal timestamps are ordered by raw item id (the official code used Python set
order there, which changes between runs), and users/items are numbered by sorted raw id.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from gream_lit.data.catalog import TEXT_FIELDS, Catalog, DataError

log = logging.getLogger(__name__)

Event = tuple[str, str, int]  # (raw user id, raw item id, timestamp)
IdKey = Callable[[str], object]  # sort key over raw ids


def numeric_id(raw: str) -> tuple[int, str]:
    """Sort key that orders numeric ids by value ("2" < "10") and puts other ids after them."""
    return (int(raw), "") if raw.isascii() and raw.isdigit() else (1 << 62, raw)


def dedup_earliest(events: Iterable[Event]) -> list[Event]:
    """One event per (user, item): the earliest; repeated purchases are not new items to predict."""
    first: dict[tuple[str, str], int] = {}
    for user, item, ts in events:
        key = (user, item)
        if key not in first or ts < first[key]:
            first[key] = ts
    return [(u, i, ts) for (u, i), ts in first.items()]


def k_core(events: list[Event], user_k: int, item_k: int) -> list[Event]:
    """Repeatedly drop users with < ``user_k`` and items with < ``item_k`` events until none are left to drop."""
    while True:
        users = Counter(u for u, _, _ in events)
        items = Counter(i for _, i, _ in events)
        kept = [e for e in events if users[e[0]] >= user_k and items[e[1]] >= item_k]
        if len(kept) == len(events):
            return kept
        events = kept


def order_sequences(events: Iterable[Event], item_key: IdKey = str) -> dict[str, list[str]]:
    """Each user's items oldest first; equal timestamps are ordered by ``item_key(raw item id)``."""
    per_user: dict[str, list[tuple[int, object, str]]] = {}
    for user, item, ts in events:
        per_user.setdefault(user, []).append((ts, item_key(item), item))
    return {u: [item for _, _, item in sorted(evs, key=lambda e: (e[0], e[1]))] for u, evs in per_user.items()}


def build_catalog(
    name: str,
    sequences: Mapping[str, list[str]],
    meta: Mapping[str, Mapping[str, str]],
    id_key: IdKey = str,
    min_interactions: int = 3,
    keep_unused_items: bool = False,
    skipped: Mapping[str, int] | None = None,
) -> Catalog:
    """Number users and items by sorted raw id (``id_key``) and build the Catalog.

    Users with fewer than ``min_interactions`` items cannot be split leave-one-out: they are skipped,
    counted in ``catalog.skipped["short_users"]`` and logged. Items are those the kept users touch,
    or every item in ``meta`` when ``keep_unused_items`` (a full movie list, say).
    """
    kept_users = sorted((u for u, s in sequences.items() if len(s) >= min_interactions), key=id_key)
    short = len(sequences) - len(kept_users)
    counts = {k: v for k, v in (skipped or {}).items() if v}
    if short:
        counts["short_users"] = short
        log.warning("%s: skipped %d users with fewer than %d interactions", name, short, min_interactions)
    used = set(meta) if keep_unused_items else {i for u in kept_users for i in sequences[u]}
    missing = next((i for i in used if i not in meta), None)
    if missing is not None:
        raise DataError(f"{name}: item {missing!r} has interactions but no metadata record")
    item_ids = sorted(used, key=id_key)
    index = {raw: i for i, raw in enumerate(item_ids)}
    items = [{f: str(meta[raw].get(f, "") or "") for f in TEXT_FIELDS} for raw in item_ids]
    return Catalog(
        name=name,
        sequences=[[index[i] for i in sequences[u]] for u in kept_users],
        items=items,
        item_ids=item_ids,
        user_ids=kept_users,
        skipped=counts,
    )


def preprocess(
    name: str,
    events: Iterable[Event],
    meta: Mapping[str, Mapping[str, str]],
    user_k: int = 5,
    item_k: int = 5,
    id_key: IdKey = str,
) -> Catalog:
    """The full GREAM pipeline from raw events and item metadata to a Catalog (docs/gream_spec.md §2.2 steps 3-7).

    ``catalog.skipped`` counts the interactions each step dropped (``no_metadata``, ``duplicates``,
    ``k_core``), so the statistics table can show where the raw data went.
    """
    if user_k < 3:
        raise DataError(f"{name}: user_k={user_k}; leave-one-out needs at least 3 interactions per user")
    if item_k < 1:
        raise DataError(f"{name}: item_k={item_k} must be >= 1")
    events = list(events)
    if not events:
        raise DataError(f"{name}: no interactions")
    with_meta = [e for e in events if e[1] in meta]
    unique = dedup_earliest(with_meta)
    core = k_core(unique, user_k, item_k)
    if not core:
        raise DataError(
            f"{name}: no interactions left after {user_k}/{item_k}-core filtering "
            f"({len(events)} raw, {len(with_meta)} with metadata, {len(unique)} unique)"
        )
    skipped = {
        "no_metadata": len(events) - len(with_meta),
        "duplicates": len(with_meta) - len(unique),
        "k_core": len(unique) - len(core),
    }
    log.info("%s: %d raw interactions; dropped %s", name, len(events), skipped)
    return build_catalog(name, order_sequences(core, id_key), meta, id_key, skipped=skipped)


def _atomic_write(path: Path, text: str) -> None:
    """Write next to the target, then rename: a crash leaves the old file or none, never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_lcrec(catalog: Catalog, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``<name>.inter.json``, ``.item.json``, ``.user2id`` and ``.item2id`` (``raw<TAB>id`` lines)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        f"{name}.inter.json": json.dumps({str(u): s for u, s in enumerate(catalog.sequences)}),
        f"{name}.item.json": json.dumps(dict(enumerate(map(dict, catalog.items))), ensure_ascii=False, indent=1),
        f"{name}.user2id": "".join(f"{raw}\t{u}\n" for u, raw in enumerate(catalog.user_ids)),
        f"{name}.item2id": "".join(f"{raw}\t{i}\n" for i, raw in enumerate(catalog.item_ids)),
    }
    paths = []
    for fname, text in files.items():
        _atomic_write(out / fname, text)
        paths.append(out / fname)
    return paths
