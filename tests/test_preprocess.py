"""Preprocessing steps against hand-computed values, LC-Rec output, and the ``data`` command."""

from __future__ import annotations

import json
import urllib.error

import pytest
from test_readers import expected_sequences, write_dump

from gream_lit.data import cli as data_cli
from gream_lit.data import preprocess
from gream_lit.data.catalog import DataError
from gream_lit.data.preprocess import build_catalog, dedup_earliest, k_core, numeric_id, order_sequences, write_lcrec
from gream_lit.data.readers import load_catalog
from gream_lit.data.text import clean_text
from gream_lit.experiment.cli import main as cli_main


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("Tom &amp; Jerry <b>Box</b>", "Tom & Jerry Box."),
        ('He said "hi"\r\nthen left...', "He said hithen left."),
        ("ends with dot.", "ends with dot."),
        (["a <i>b</i>", "", "c."], "a b c."),
        ("", ""),
        ("...", ""),
        (None, ""),
        ("x" * 1998, "x" * 1998 + "."),
        ("x" * 1999, ""),
    ],
)
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_dedup_keeps_earliest_event_per_pair():
    events = [("u", "a", 9), ("u", "a", 3), ("u", "b", 5), ("v", "a", 7)]
    assert sorted(dedup_earliest(events)) == [("u", "a", 3), ("u", "b", 5), ("v", "a", 7)]


def test_k_core_iterates_until_stable():
    # k=2: item c has one buyer -> dropped; then w has one item left -> dropped; then b has one buyer.
    events = [("u", "a", 1), ("v", "a", 1), ("u", "d", 1), ("v", "d", 1), ("w", "b", 1), ("w", "c", 1), ("u", "b", 1)]
    kept = k_core(events, user_k=2, item_k=2)
    assert sorted(kept) == [("u", "a", 1), ("u", "d", 1), ("v", "a", 1), ("v", "d", 1)]


def test_order_breaks_timestamp_ties_by_raw_item_id():
    events = [("u", "10", 5), ("u", "9", 5), ("u", "z", 1)]
    assert order_sequences(events) == {"u": ["z", "10", "9"]}
    assert order_sequences(events, numeric_id) == {"u": ["z", "9", "10"]}


def test_build_catalog_numbers_by_sorted_raw_id_and_counts_short_users(caplog):
    meta = {i: {"title": i} for i in "abc"}
    catalog = build_catalog("t", {"z": ["c", "a", "b"], "y": ["b", "c", "a"], "x": ["a"]}, meta)
    assert catalog.user_ids == ["y", "z"] and catalog.item_ids == ["a", "b", "c"]
    assert catalog.sequences == [[1, 2, 0], [2, 0, 1]]
    assert catalog.skipped == {"short_users": 1}
    assert "skipped 1 users" in caplog.text


def test_preprocess_rejects_k_below_leave_one_out_minimum():
    with pytest.raises(DataError, match="user_k=2"):
        preprocess.preprocess("t", [("u", "a", 1)], {"a": {}}, user_k=2)


def test_write_lcrec_round_trips_through_the_lcrec_reader(tmp_path):
    ratings, meta = write_dump(tmp_path / "raw", "amazon18")
    catalog = load_catalog(tmp_path / "raw", "amazon18")
    write_lcrec(catalog, tmp_path / "out", "Toys")
    again = load_catalog(tmp_path / "out", "lcrec")
    assert again.sequences == catalog.sequences and again.items == catalog.items
    assert (tmp_path / "out" / "Toys.item2id").read_text().splitlines()[:2] == ["A\t0", "B\t1"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["Toys.inter.json", "Toys.item.json", "Toys.item2id", "Toys.user2id"]


def test_interrupted_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    ratings, meta = write_dump(tmp_path / "raw", "amazon18")
    catalog = load_catalog(tmp_path / "raw", "amazon18")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "Toys.inter.json").write_text('{"old": [1, 2, 3]}')

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(preprocess.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_lcrec(catalog, tmp_path / "out", "Toys")
    assert json.loads((tmp_path / "out" / "Toys.inter.json").read_text()) == {"old": [1, 2, 3]}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Toys.inter.json"]


def test_data_prepare_and_stats_commands(tmp_path, capsys):
    ratings, meta = write_dump(tmp_path / "raw", "amazon14")
    out = tmp_path / "out"
    argv = ["data", "prepare", "--source", "amazon14", "--ratings", str(ratings), "--meta", str(meta)]
    assert cli_main([*argv, "--out", str(out), "--name", "Toys", "--k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "Toys" in printed and "25" in printed and "duplicates 1" in printed
    inter = json.loads((out / "Toys.inter.json").read_text())
    lines = (out / "Toys.item2id").read_text().splitlines()
    raw_item = {int(i): raw for raw, i in (line.split("\t") for line in lines)}
    assert [raw_item[i] for i in inter["1"]] == expected_sequences()["u2"]
    assert cli_main(["data", "stats", "--path", str(out), "--format", "lcrec"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row == ["Toys", "5", "5", "25", "5.00", "1.00000"]


def test_data_prepare_from_a_download_folder(tmp_path, capsys):
    write_dump(tmp_path / "raw", "amazon23")
    argv = ["data", "prepare", "--source", "amazon23", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]
    assert cli_main([*argv, "--name", "Toys"]) == 0
    assert load_catalog(tmp_path / "out", "lcrec").stats()["interactions"] == 25
    with pytest.raises(SystemExit):
        cli_main(["data", "prepare", "--source", "amazon23", "--out", str(tmp_path / "o"), "--name", "Toys"])
    assert "either --raw DIR or both --ratings and --meta" in capsys.readouterr().err


def test_download_urls_for_each_dump():
    assert data_cli.dump_urls("amazon18", "Industrial_and_Scientific") == [
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall/Industrial_and_Scientific.csv",
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/metaFiles2/meta_Industrial_and_Scientific.json.gz",
    ]
    assert data_cli.dump_urls("amazon14", "Beauty")[0].endswith("/categoryFiles/ratings_Beauty.csv")
    assert data_cli.dump_urls("amazon23", "All_Beauty")[1].endswith("/raw/meta_categories/meta_All_Beauty.jsonl.gz")
    with pytest.raises(DataError, match="unknown source"):
        data_cli.dump_urls("amazon99", "Beauty")


def test_download_reports_unreachable_network_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data_cli.urllib.request, "urlopen", offline)
    argv = ["data", "download", "--source", "amazon18", "--category", "Industrial_and_Scientific"]
    argv += ["--out", str(tmp_path)]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot download https://mcauleylab.ucsd.edu/" in err and "Name or service not known" in err
    assert list(tmp_path.iterdir()) == []
