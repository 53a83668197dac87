"""LC-Rec / GREAM json format: ``<name>.inter.json`` + ``<name>.item.json`` in one folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gream_lit.data.catalog import TEXT_FIELDS, Catalog, DataError

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: byte {raw[e.start]:#04x} at offset {e.start} is not UTF-8; re-save the file as UTF-8"
        ) from e
    if not text.strip():
        raise DataError(f"{path}: file is empty")

    def unique(pairs: list[tuple[str, object]]) -> dict:
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DataError(f"{path}: key {key!r} appears twice; the later entry would replace the earlier")
            seen.add(key)
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object")
    return data


def _find(folder: Path, suffix: str, name: str | None) -> Path:
    if name:
        return folder / f"{name}{suffix}"
    hits = sorted(folder.glob(f"*{suffix}"))
    if len(hits) != 1:
        raise DataError(f"{folder}: expected exactly one *{suffix} file, found {[h.name for h in hits]}")
    return hits[0]


def read_lcrec(path: str | Path, name: str | None = None, min_interactions: int = 3) -> Catalog:
    """Read ``{name}.inter.json`` (user -> item ids, oldest first) and ``{name}.item.json``.

    Users with fewer than ``min_interactions`` items cannot give a train/valid/test split: they are
    skipped, counted in ``catalog.skipped`` and logged. An item id in the inter file that the item file
    lacks is an error naming both.
    """
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"{folder}: dataset folder not found")
    inter_path = _find(folder, ".inter.json", name)
    item_path = _find(folder, ".item.json", name)
    inter = _read_json(inter_path)
    meta = _read_json(item_path)

    item_ids = sorted(meta, key=lambda k: (len(k), k) if k.isdigit() else (10**9, k))
    index = {raw: i for i, raw in enumerate(item_ids)}
    items = []
    for raw in item_ids:
        rec = meta[raw]
        if not isinstance(rec, dict):
            raise DataError(f"{item_path}: item {raw!r} is not an object")
        entry = {f: str(rec.get(f, "") or "") for f in TEXT_FIELDS}
        entry.update({k: str(v) for k, v in rec.items() if k not in entry and isinstance(v, (str, int, float))})
        items.append(entry)

    sequences, user_ids, short = [], [], 0
    for user, seq in inter.items():
        if not isinstance(seq, list):
            raise DataError(f"{inter_path}: user {user!r} maps to {type(seq).__name__}, expected a list")
        try:
            mapped = [index[str(i)] for i in seq]
        except KeyError as e:
            raise DataError(f"{inter_path}: user {user!r} has item {e.args[0]!r} that {item_path.name} lacks") from None
        if len(mapped) < min_interactions:
            short += 1
            continue
        sequences.append(mapped)
        user_ids.append(str(user))
    if short:
        log.warning("%s: skipped %d users with fewer than %d interactions", inter_path, short, min_interactions)
    if not sequences:
        raise DataError(f"{inter_path}: no user has at least {min_interactions} interactions")
    return Catalog(
        name=inter_path.name.removesuffix(".inter.json"),
        sequences=sequences,
        items=items,
        item_ids=item_ids,
        user_ids=user_ids,
        skipped={"short_users": short} if short else {},
    )
