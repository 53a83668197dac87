"""Bad input fails early with a DataError naming the file and the offending entry."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest

from gream_lit.data.catalog import DataError
from gream_lit.data.readers import load_catalog
from gream_lit.data.readers.amazon import load_amazon, read_meta, read_ratings_csv, read_reviews_2023
from gream_lit.experiment.cli import main as cli_main

ITEMS = {str(i): {"title": f"t{i}"} for i in range(4)}


def write_lcrec(folder: Path, inter: dict | str, items: dict | str = ITEMS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".inter.json", inter), (".item.json", items)):
        (folder / f"D{suffix}").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


@pytest.mark.parametrize("fmt", ["lcrec", "movielens", "amazon14", "amazon18", "amazon23"])
def test_missing_dataset_folder(tmp_path, fmt):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        load_catalog(tmp_path / "nope", fmt)


def test_missing_raw_file_names_it(tmp_path):
    meta = tmp_path / "meta_X.json.gz"
    with pytest.raises(DataError, match=re.escape(f"{meta}: file not found")):
        load_amazon("amazon18", tmp_path / "X.csv", meta, "X")


def test_missing_file_in_prepare_command_exits_1_with_message(tmp_path, capsys):
    argv = ["data", "prepare", "--source", "amazon18", "--ratings", str(tmp_path / "X.csv")]
    argv += ["--meta", str(tmp_path / "m.gz")]
    assert cli_main([*argv, "--out", str(tmp_path / "out"), "--name", "X"]) == 1
    assert f"{tmp_path / 'm.gz'}: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_truncated_lcrec_json(tmp_path):
    folder = write_lcrec(tmp_path, '{"0": [0, 1, 2], "1": [1, 2')
    with pytest.raises(DataError, match=r"D\.inter\.json: invalid JSON at line 1"):
        load_catalog(folder, "lcrec")


def test_a_non_utf8_byte_names_the_file_and_line(tmp_path):
    folder = write_lcrec(tmp_path, {"0": [0, 1, 2]})
    (folder / "D.item.json").write_bytes(b'{"0": {"title": "t0"},\n "1": {"title": "caf\xe9"}}')
    with pytest.raises(DataError, match=r"D\.item\.json: line 2: byte 0xe9 at offset \d+ is not UTF-8"):
        load_catalog(folder, "lcrec")
    meta = tmp_path / "meta_X.json"
    meta.write_bytes(json.dumps({"asin": "A", "title": "ok"}).encode() + b'\n{"asin": "B", "title": "\xff"}\n')
    with pytest.raises(DataError, match=r"meta_X\.json: line 2: not UTF-8"):
        read_meta(meta, "amazon18")


def test_a_colliding_or_inconsistent_index_names_the_file(tmp_path):
    from gream_lit.data.semantic_index import SemanticIndex

    path = tmp_path / "X.index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_2>", "<b_1>"], "2": ["<a_1>", "<b_2>"]}))
    assert SemanticIndex.from_json(path).collisions() == 1  # reports and index tools read it as it is
    with pytest.raises(DataError, match=r"X\.index\.json: 1 items share .* items 0 and 2 \(<a_1><b_2>\).*--collision"):
        SemanticIndex.from_json(path, unique=True)
    path.with_name("X.index.meta.json").write_text(json.dumps({"codebook_sizes": [1, 2]}))
    with pytest.raises(
        DataError, match=r"X\.index\.json \(codebook sizes from X\.index\.meta\.json.*level 0 has codes"
    ):
        SemanticIndex.from_json(path)


def test_embeddings_that_carry_no_information_are_refused():
    import numpy as np

    from gream_lit.indexing.embed import check_embeddings

    with pytest.raises(DataError, match=r"emb: 4 of 4 rows are all zeros, e\.g\. item 0"):
        check_embeddings(np.zeros((4, 3)), "emb")
    with pytest.raises(DataError, match=r"emb: every row is the same vector"):
        check_embeddings(np.ones((4, 3)), "emb")
    ok = np.eye(4, 3) + 0.1
    assert check_embeddings(ok, "emb") is not None


def test_truncated_json_line_in_2018_metadata(tmp_path):
    meta = tmp_path / "meta_X.json.gz"
    with gzip.open(meta, "wt") as f:
        f.write(json.dumps({"asin": "A", "title": "ok"}) + "\n" + '{"asin": "B", "tit\n')
    with pytest.raises(DataError, match=r"meta_X\.json\.gz: line 2: cannot parse record"):
        read_meta(meta, "amazon18")


def test_truncated_gzip_stream(tmp_path):
    meta = tmp_path / "meta_X.json.gz"
    data = gzip.compress(("".join(json.dumps({"asin": str(i)}) + "\n" for i in range(2000))).encode())
    meta.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"meta_X\.json\.gz: unreadable"):
        read_meta(meta, "amazon18")


def test_inter_item_missing_from_item_file(tmp_path):
    folder = write_lcrec(tmp_path, {"0": [0, 1, 2], "7": [1, 2, 99]})
    with pytest.raises(DataError, match=r"D\.inter\.json: user '7' has item '99' that D\.item\.json lacks"):
        load_catalog(folder, "lcrec")


def test_rated_movie_missing_from_u_item(tmp_path):
    (tmp_path / "u.data").write_text("1\t5\t3\t100\n1\t6\t3\t101\n1\t7\t3\t102\n")
    (tmp_path / "u.item").write_text("5|Five (1990)|||u|" + "|".join(["0"] * 19) + "\n")
    with pytest.raises(DataError, match=r"u\.data: movie id '6' is rated but u\.item has no record of it"):
        load_catalog(tmp_path, "movielens")


def test_user_with_fewer_than_three_interactions_is_counted_and_logged(tmp_path, caplog):
    folder = write_lcrec(tmp_path, {"0": [0, 1, 2], "1": [3, 0], "2": [1, 2, 3, 0]})
    with caplog.at_level(logging.WARNING):
        catalog = load_catalog(folder, "lcrec")
    assert catalog.user_ids == ["0", "2"] and catalog.skipped == {"short_users": 1}
    assert "skipped 1 users with fewer than 3 interactions" in caplog.text and "D.inter.json" in caplog.text


@pytest.mark.parametrize("empty", ["D.inter.json", "D.item.json"])
def test_empty_lcrec_file(tmp_path, empty):
    folder = write_lcrec(tmp_path, {"0": [0, 1, 2]})
    (folder / empty).write_text("")
    with pytest.raises(DataError, match=f"{empty}: file is empty"):
        load_catalog(folder, "lcrec")


def test_empty_raw_files(tmp_path):
    (tmp_path / "r.csv").write_text("\n")
    with pytest.raises(DataError, match=r"r\.csv: file is empty"):
        read_ratings_csv(tmp_path / "r.csv", user_first=True)
    with gzip.open(tmp_path / "meta_X.jsonl.gz", "wt") as f:
        f.write("")
    with pytest.raises(DataError, match=r"meta_X\.jsonl\.gz: file is empty"):
        read_meta(tmp_path / "meta_X.jsonl.gz", "amazon23")
    (tmp_path / "u.data").write_text("")
    (tmp_path / "u.item").write_text("1|One (1990)|||u|" + "|".join(["0"] * 19) + "\n")
    with pytest.raises(DataError, match=r"u\.data: file is empty"):
        load_catalog(tmp_path, "movielens")


def test_malformed_ratings_line_is_named(tmp_path):
    (tmp_path / "r.csv").write_text("A,u1,5.0,100\nB,u2,5.0\n")
    with pytest.raises(DataError, match=r"r\.csv: line 2: expected 4 fields .* 'B,u2,5\.0'"):
        read_ratings_csv(tmp_path / "r.csv", user_first=False)


def test_review_without_integer_timestamp_is_named(tmp_path):
    (tmp_path / "X.jsonl").write_text(json.dumps({"user_id": "u", "parent_asin": "A", "timestamp": "soon"}) + "\n")
    with pytest.raises(DataError, match=r"X\.jsonl: line 1: timestamp 'soon' is not an integer"):
        read_reviews_2023(tmp_path / "X.jsonl")


def test_nothing_left_after_k_core_says_how_much_was_read(tmp_path):
    (tmp_path / "r.csv").write_text("u1,A,5.0,1\nu1,B,5.0,2\n")
    (tmp_path / "meta.txt").write_text(repr({"asin": "A"}) + "\n" + repr({"asin": "B"}) + "\n")
    with pytest.raises(DataError, match=r"no interactions left after 5/5-core filtering \(2 raw, 2 with metadata"):
        load_amazon("amazon14", tmp_path / "r.csv", tmp_path / "meta.txt", "X")


def test_truncated_movielens_rating_line_is_named(tmp_path):
    (tmp_path / "u.data").write_text("1\t5\t3\t100\n1\t5\n")
    (tmp_path / "u.item").write_text("5|Five (1990)|||u|" + "|".join(["0"] * 19) + "\n")
    with pytest.raises(DataError, match=r"u\.data: line 2 has no integer timestamp"):
        load_catalog(tmp_path, "movielens")


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
def test_zero_batch_sizes_fail_when_the_data_module_is_built(field):
    from gream_lit.baselines.seqrec_data import SeqRecDataModule

    with pytest.raises(DataError, match=f"{field} must be at least 1, got 0"):
        SeqRecDataModule(data_dir="unused", **{field: 0})


@pytest.mark.parametrize(
    ("inter", "items", "message"),
    [
        ('{"0": [0, 1, 2], "0": [1, 2, 3]}', None, r"D\.inter\.json: key '0' appears twice"),
        (
            '{"0": [0, 1, 2]}',
            '{"0": {"title": "a"}, "1": {"title": "b"}, "0": {"title": "c"}}',
            r"D\.item\.json: key '0'",
        ),
    ],
)
def test_duplicate_user_or_item_keys_name_the_file_and_key(tmp_path, inter, items, message):
    folder = write_lcrec(tmp_path, inter, items or ITEMS)
    with pytest.raises(DataError, match=message):
        load_catalog(folder, "lcrec")


def test_a_movie_listed_twice_in_u_item_is_named(tmp_path):
    (tmp_path / "u.data").write_text("1\t5\t3\t100\n1\t5\t3\t101\n1\t5\t3\t102\n")
    row = "|Five (1990)|||u|" + "|".join(["0"] * 19) + "\n"
    (tmp_path / "u.item").write_text("5" + row + "5" + row)
    with pytest.raises(DataError, match=r"u\.item: line 2: movie id '5' appears twice"):
        load_catalog(tmp_path, "movielens")


def test_items_without_any_text_are_counted_and_logged(tmp_path, caplog):
    items = {**ITEMS, "1": {"title": ""}, "2": {"description": None}}
    folder = write_lcrec(tmp_path, {"0": [0, 1, 2, 3]}, items)
    with caplog.at_level(logging.WARNING):
        load_catalog(folder, "lcrec")
    assert re.search(
        r"2 of 4 items have no text \(title, description, brand, categories all empty\), e\.g\. 1, 2", caplog.text
    )


def test_repeated_records_in_a_raw_metadata_dump_are_counted(tmp_path, caplog):
    meta = tmp_path / "meta_X.json"
    meta.write_text("".join(json.dumps({"asin": a, "title": a}) + "\n" for a in ("A", "B", "A")))
    with caplog.at_level(logging.WARNING):
        assert set(read_meta(meta, "amazon18")) == {"A", "B"}
    assert "1 records repeat an item id already read (e.g. A)" in caplog.text
