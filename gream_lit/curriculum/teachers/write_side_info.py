"""User preference and intention texts for the itemsearch / preferenceobtain alignment tasks (docs/gream_spec.md §3).

Per user: three explicit preferences (summary, long-term, short-term) written from the titles of the
history ``seq[:-3]`` (last ``max_history``), and two vague intentions (user-side, item-side) written from
the last training item ``seq[-3]``. Valid and test items are never shown to the teacher.
Stored in the official ``<D>.user.json`` layout so files are interchangeable with GREAM's; the alignment
tasks read it with ``gream_lit.alignment.tasks.load_side_info``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gream_lit.curriculum.teachers.base import Messages, Teacher
from gream_lit.curriculum.teachers.prompts import (
    EMPTY_PREFERENCE,
    INTENTION_PROMPTS,
    PREFERENCE_PROMPTS,
    after_label,
    intention_messages,
    preference_messages,
)
from gream_lit.data.catalog import Catalog, DataError

log = logging.getLogger(__name__)
PREFERENCE_KINDS = tuple(PREFERENCE_PROMPTS)  # summary, long_term, short_term (stored in this order)
INTENTION_KINDS = tuple(INTENTION_PROMPTS)  # user, item


def _raw(catalog: Catalog, item: int) -> int | str:
    raw = catalog.item_ids[item]
    return int(raw) if raw.isdigit() else raw


def _clean(kind: str, text: str) -> str:
    text = " ".join(text.split()) if kind == "summary" else after_label(text)
    return text or EMPTY_PREFERENCE


def user_requests(catalog: Catalog, user: int, domain: str, max_history: int = 20) -> list[Messages]:
    """The five requests of one user: three preferences, then two intentions."""
    seq = catalog.sequences[user]
    history = [catalog.items[i] for i in seq[:-3][-max_history:]]
    target = catalog.items[seq[-3]]
    return [preference_messages(k, domain, history) for k in PREFERENCE_KINDS] + [
        intention_messages(k, domain, target) for k in INTENTION_KINDS
    ]


def build_user_side_info(
    catalog: Catalog,
    teacher: Teacher,
    domain: str | None = None,
    max_history: int = 20,
    users: list[int] | None = None,
    out: str | Path | None = None,
    chunk_users: int = 256,
) -> dict:
    """Ask ``teacher`` for every user's texts; users with fewer than 4 items (no history before
    ``seq[-3]``) are skipped and counted. Returns (and writes to ``out``) the ``user.json`` dict."""
    domain = domain or catalog.name
    chosen = list(range(catalog.n_users)) if users is None else list(users)
    eligible = [u for u in chosen if len(catalog.sequences[u]) >= 4]
    if len(eligible) < len(chosen):
        log.warning("side info: skipped %d users with fewer than 4 interactions", len(chosen) - len(eligible))
    if not eligible:
        raise DataError(f"{catalog.name}: no user has the 4 interactions side information needs")
    prefs: dict[str, list[str]] = {}
    intents: dict[str, dict] = {}
    n = len(PREFERENCE_KINDS) + len(INTENTION_KINDS)
    for start in range(0, len(eligible), chunk_users):
        block = eligible[start : start + chunk_users]
        requests = [r for u in block for r in user_requests(catalog, u, domain, max_history)]
        answers = teacher.complete_many(requests)
        for k, u in enumerate(block):
            texts = answers[k * n : (k + 1) * n]
            uid, seq = catalog.user_ids[u], catalog.sequences[u]
            prefs[uid] = [_clean(kind, t) for kind, t in zip(PREFERENCE_KINDS, texts)]
            intents[uid] = {
                "item": _raw(catalog, seq[-3]),
                "inters": [_raw(catalog, i) for i in seq[:-3][-max_history:]],
                "querys": [_clean(kind, t) for kind, t in zip(INTENTION_KINDS, texts[len(PREFERENCE_KINDS) :])],
            }
        log.info("side info: %d / %d users", min(start + chunk_users, len(eligible)), len(eligible))
    result = {"user_explicit_preference": prefs, "user_vague_intention": {"train": intents}}
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, ensure_ascii=False))
        tmp.replace(path)
    return result
