"""Raw Amazon review dumps (2014, 2018, 2023) -> events + item text, then the docs/gream_spec.md §2.2 pipeline.

File layouts, as the public dumps name them (``<Cat>`` is the category, e.g. ``Industrial_and_Scientific``):

- 2014: ``ratings_<Cat>.csv`` (``user,item,rating,ts``) + ``meta_<Cat>.json.gz`` (Python-literal lines).
- 2018: ``<Cat>.csv`` (``item,user,rating,ts``) + ``meta_<Cat>.json.gz`` (JSON lines).
- 2023: ``<Cat>.jsonl(.gz)`` reviews (``user_id``, ``parent_asin``, ``timestamp`` in ms) +
  ``meta_<Cat>.jsonl(.gz)``. Items are parent ASINs, so colour/size variants are one item.

Readers registered as formats ``amazon14``/``amazon18``/``amazon23`` take the folder holding both files.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.preprocess import Event, preprocess
from gream_lit.data.text import clean_text

log = logging.getLogger(__name__)

SOURCES = ("amazon14", "amazon18", "amazon23")


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of a plain or gzipped text file; missing/empty files are errors."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    seen = False
    try:
        with opener(path, "rb") as f:  # bytes, decoded per line, so a bad byte is reported at its line
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: line {n}: not UTF-8 ({e.reason}); re-save the file as UTF-8") from e
                if line.strip():
                    seen = True
                    yield n, line
    except (EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    if not seen:
        raise DataError(f"{path}: file is empty")


def read_ratings_csv(path: str | Path, user_first: bool) -> list[Event]:
    """Ratings-only csv lines ``user,item,rating,ts`` (2014) or ``item,user,rating,ts`` (2018)."""
    path = Path(path)
    events = []
    for n, line in _open_lines(path):
        parts = line.strip().split(",")
        if len(parts) != 4 or not parts[3].strip().lstrip("-").isdigit():
            raise DataError(f"{path}: line {n}: expected 4 fields ending in an integer timestamp, got {line.strip()!r}")
        a, b, _, ts = parts
        events.append((a, b, int(ts)) if user_first else (b, a, int(ts)))
    return events


def _records(path: Path, parse: Callable[[str], object]) -> Iterator[tuple[int, dict]]:
    for n, line in _open_lines(path):
        try:
            rec = parse(line)
        except (ValueError, SyntaxError) as e:
            raise DataError(f"{path}: line {n}: cannot parse record ({type(e).__name__}: {e})") from e
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {n}: expected an object, got {type(rec).__name__}")
        yield n, rec


def _require(path: Path, n: int, rec: dict, key: str) -> str:
    value = rec.get(key)
    if not value:
        raise DataError(f"{path}: line {n}: record has no {key!r}")
    return str(value)


def read_reviews_2023(path: str | Path) -> list[Event]:
    """2023 review lines: ``user_id``, ``parent_asin`` and ``timestamp`` (milliseconds)."""
    path = Path(path)
    events = []
    for n, rec in _records(path, json.loads):
        ts = rec.get("timestamp")
        if not isinstance(ts, int):
            raise DataError(f"{path}: line {n}: timestamp {ts!r} is not an integer")
        events.append((_require(path, n, rec, "user_id"), _require(path, n, rec, "parent_asin"), ts))
    return events


def _brand(value: object) -> str:
    return str(value or "").replace("by\n", "").strip()


def _cut_categories(categories: list) -> str:
    """2018 category lists end in HTML fragments on some items: keep the entries before the first one."""
    kept = []
    for c in categories:
        if "</span>" in str(c):
            break
        kept.append(str(c).strip())
    return ",".join(kept)


def meta_2014(rec: dict) -> dict[str, str]:
    cats = rec.get("categories") or [[]]
    return {
        "title": clean_text(rec.get("title", "")),
        "description": clean_text(rec.get("description", "")),
        "brand": _brand(rec.get("brand")),
        "categories": ",".join(cats[0]).strip(),
    }


def meta_2018(rec: dict) -> dict[str, str]:
    return {
        "title": clean_text(rec.get("title", "")),
        "description": clean_text(rec.get("description", "")),
        "brand": _brand(rec.get("brand")),
        "categories": _cut_categories(rec.get("category") or []),
    }


def meta_2023(rec: dict) -> dict[str, str]:
    details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
    return {
        "title": clean_text(rec.get("title", "")),
        "description": clean_text(rec.get("description") or []),
        "brand": _brand(rec.get("store") or details.get("Brand")),
        "categories": ",".join(str(c).strip() for c in rec.get("categories") or []),
    }


META = {
    "amazon14": (ast.literal_eval, "asin", meta_2014),
    "amazon18": (json.loads, "asin", meta_2018),
    "amazon23": (json.loads, "parent_asin", meta_2023),
}


def read_meta(path: str | Path, source: str) -> dict[str, dict[str, str]]:
    """Item id -> cleaned text fields, for one dump's metadata file."""
    if source not in META:
        raise DataError(f"unknown Amazon source {source!r}; known: {list(SOURCES)}")
    parse, key, fields = META[source]
    path = Path(path)
    meta, repeated = {}, []
    for n, rec in _records(path, parse):
        item = _require(path, n, rec, key)
        if item in meta:
            repeated.append(item)
        meta[item] = fields(rec)
    if repeated:  # the public dumps hold repeated records; a raw dump is read as published, with a count
        log.warning(
            "%s: %d records repeat an item id already read (e.g. %s); the last record of each is kept",
            path,
            len(repeated),
            ", ".join(repeated[:3]),
        )
    return meta


def read_events(path: str | Path, source: str) -> list[Event]:
    if source == "amazon14":
        return read_ratings_csv(path, user_first=True)
    if source == "amazon18":
        return read_ratings_csv(path, user_first=False)
    if source == "amazon23":
        return read_reviews_2023(path)
    raise DataError(f"unknown Amazon source {source!r}; known: {list(SOURCES)}")


def load_amazon(
    source: str, ratings: str | Path, meta: str | Path, name: str, user_k: int = 5, item_k: int = 5
) -> Catalog:
    """Raw dump files -> Catalog through the GREAM preprocessing (docs/gream_spec.md §2.2)."""
    items = read_meta(meta, source)
    return preprocess(name, read_events(ratings, source), items, user_k=user_k, item_k=item_k)


def find_dump_files(folder: str | Path, source: str) -> tuple[Path, Path, str]:
    """(ratings, meta, category) in a folder holding one dump's two files, as ``data download`` leaves them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of raw {source} files not found")
    metas = sorted(p for p in folder.iterdir() if p.name.startswith("meta_"))
    if len(metas) != 1:
        raise DataError(f"{folder}: expected exactly one meta_* file, found {[p.name for p in metas]}")
    category = metas[0].name.removeprefix("meta_").split(".")[0]
    candidates = {
        "amazon14": [f"ratings_{category}.csv"],
        "amazon18": [f"{category}.csv"],
        "amazon23": [f"{category}.jsonl", f"{category}.jsonl.gz"],
    }[source]
    found = [folder / c for c in candidates if (folder / c).is_file()]
    if not found:
        raise DataError(f"{folder}: no ratings/reviews file {' or '.join(candidates)} beside {metas[0].name}")
    return found[0], metas[0], category


def _folder_reader(source: str) -> Callable[..., Catalog]:
    def read(path: str | Path, user_k: int = 5, item_k: int = 5) -> Catalog:
        ratings, meta, category = find_dump_files(path, source)
        return load_amazon(source, ratings, meta, category, user_k, item_k)

    read.__doc__ = f"Read a folder with one raw {source} dump (ratings/reviews + metadata) and preprocess it."
    return read


read_amazon14 = _folder_reader("amazon14")
read_amazon18 = _folder_reader("amazon18")
read_amazon23 = _folder_reader("amazon23")
