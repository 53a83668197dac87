"""Teacher-written user side information (docs/gream_spec.md §3) for the itemsearch and preferenceobtain tasks.

Read from GREAM's ``<D>.user.json``: ``{"user_explicit_preference": {uid: [p1, p2, p3]},
"user_vague_intention": {"train": {uid: {"querys": [user_related, item_related], ...}}}}``, keyed by
raw user ids. Users the file lacks simply have no side information.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gream_lit.data.catalog import Catalog, DataError


@dataclass
class UserSideInfo:
    """What a teacher said about one user: explicit preferences and intention queries."""

    preferences: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)


def _texts(value: object, path: Path, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: {where} must be a list of strings, got {value!r:.100}")
    return [v.strip() for v in value if v.strip()]


def load_side_info(path: str | Path, catalog: Catalog) -> dict[int, UserSideInfo]:
    """``{user index: UserSideInfo}`` for the catalog's users found in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: user side-information file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    user_index = {raw: u for u, raw in enumerate(catalog.user_ids)}
    out: dict[int, UserSideInfo] = {}
    for raw, prefs in (data.get("user_explicit_preference") or {}).items():
        if raw in user_index:
            out.setdefault(user_index[raw], UserSideInfo()).preferences = _texts(
                prefs, path, f"user_explicit_preference[{raw!r}]"
            )
    for raw, entry in ((data.get("user_vague_intention") or {}).get("train") or {}).items():
        if raw in user_index:
            if not isinstance(entry, dict):
                raise DataError(f"{path}: user_vague_intention.train[{raw!r}] must be an object")
            out.setdefault(user_index[raw], UserSideInfo()).queries = _texts(
                entry.get("querys", []), path, f"user_vague_intention.train[{raw!r}].querys"
            )
    return out
