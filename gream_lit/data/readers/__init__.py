"""Catalog readers; ``load_catalog`` picks one by format name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gream_lit.data.catalog import TEXT_FIELDS, Catalog, DataError
from gream_lit.data.readers.amazon import read_amazon14, read_amazon18, read_amazon23
from gream_lit.data.readers.lcrec import read_lcrec
from gream_lit.data.readers.movielens import read_movielens, read_movielens_widedeep

READERS: dict[str, Callable[..., Catalog]] = {
    "lcrec": read_lcrec,
    "movielens": read_movielens,
    "movielens_widedeep": read_movielens_widedeep,
    "amazon14": read_amazon14,
    "amazon18": read_amazon18,
    "amazon23": read_amazon23,
}
log = logging.getLogger(__name__)


def register_reader(name: str, fn: Callable[..., Catalog]) -> None:
    READERS[name] = fn


def load_catalog(path: str | Path, format: str = "lcrec", **kwargs) -> Catalog:
    """Read a catalog from ``path`` in the given format (lcrec, movielens, ...)."""
    if format not in READERS:
        raise DataError(f"unknown catalog format {format!r}; known: {sorted(READERS)}")
    catalog = READERS[format](path, **kwargs)
    warn_items_without_text(catalog, path)
    return catalog


def warn_items_without_text(catalog: Catalog, path: str | Path) -> int:
    """Count (and log) the items whose text fields are all empty: they are learnt from their ID alone."""
    empty = [raw for raw, item in zip(catalog.item_ids, catalog.items) if not any(item.get(f) for f in TEXT_FIELDS)]
    if empty:
        log.warning(
            "%s: %d of %d items have no text (%s all empty), e.g. %s",
            path,
            len(empty),
            catalog.n_items,
            ", ".join(TEXT_FIELDS),
            ", ".join(empty[:5]),
        )
    return len(empty)
