"""Catalog readers; ``load_catalog`` picks one by format name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gream_lit.data.catalog import Catalog, DataError
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


def register_reader(name: str, fn: Callable[..., Catalog]) -> None:
    READERS[name] = fn


def load_catalog(path: str | Path, format: str = "lcrec", **kwargs) -> Catalog:
    """Read a catalog from ``path`` in the given format (lcrec, movielens, ...)."""
    if format not in READERS:
        raise DataError(f"unknown catalog format {format!r}; known: {sorted(READERS)}")
    return READERS[format](path, **kwargs)
