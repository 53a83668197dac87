"""``python -m gream_lit data``: convert raw dumps to LC-Rec json, print statistics, download dumps.

data prepare  --source amazon18 (--ratings F --meta F | --raw DIR) --out DIR --name X [--k 5]
data stats    --path DIR --format lcrec
data download --source amazon18 --category Industrial_and_Scientific --out DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.preprocess import write_lcrec
from gream_lit.data.readers import READERS, load_catalog
from gream_lit.data.readers.amazon import SOURCES, find_dump_files, load_amazon

log = logging.getLogger(__name__)

DUMP_URLS = {
    "amazon14": (
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_{cat}.csv",
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{cat}.json.gz",
    ),
    "amazon18": (
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall/{cat}.csv",
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/metaFiles2/meta_{cat}.json.gz",
    ),
    "amazon23": (
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw/review_categories/{cat}.jsonl.gz",
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw/meta_categories/meta_{cat}.jsonl.gz",
    ),
}


def dump_urls(source: str, category: str) -> list[str]:
    """The two public files (ratings/reviews, metadata) of one category of one Amazon dump."""
    if source not in DUMP_URLS:
        raise DataError(f"unknown source {source!r}; known: {sorted(DUMP_URLS)}")
    if not category or "/" in category:
        raise DataError(f"bad category {category!r}; use the dump's file name, e.g. Industrial_and_Scientific")
    return [u.format(cat=category) for u in DUMP_URLS[source]]


def download(url: str, out_dir: Path, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``out_dir`` through a temporary file, so an interrupted download leaves no file."""
    target = out_dir / url.rsplit("/", 1)[-1]
    tmp = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DataError(
            f"cannot download {url}: {reason}. Without network access, fetch it elsewhere, put it in "
            f"{out_dir} and run `data prepare` on it"
        ) from e
    os.replace(tmp, target)
    return target


def format_stats(catalog: Catalog) -> str:
    """The statistics papers tabulate, one row per dataset (plus what preprocessing dropped)."""
    s = catalog.stats()
    header = f"{'dataset':<24} {'users':>9} {'items':>9} {'interactions':>13} {'mean len':>9} {'density':>9}"
    row = (
        f"{catalog.name:<24} {s['users']:>9,} {s['items']:>9,} {s['interactions']:>13,} "
        f"{s['mean_length']:>9.2f} {s['density']:>9.5f}"
    )
    lines = [header, "-" * len(header), row]
    if catalog.skipped:
        lines.append("dropped: " + ", ".join(f"{k} {v:,}" for k, v in sorted(catalog.skipped.items())))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gream_lit data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="raw Amazon dump -> <name>.inter.json/.item.json/.user2id/.item2id")
    prep.add_argument("--source", choices=SOURCES, required=True)
    prep.add_argument("--ratings", help="ratings csv (2014/2018) or reviews jsonl(.gz) (2023)")
    prep.add_argument("--meta", help="metadata file meta_<Cat>.json(l).gz")
    prep.add_argument("--raw", help="instead of --ratings/--meta: the folder `data download` filled")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--name", required=True, help="dataset name used in the file names")
    prep.add_argument("--k", type=int, default=5, help="k-core threshold for users and items (>= 3)")
    stats = sub.add_parser("stats", help="print statistics of any readable catalog")
    stats.add_argument("--path", default="", help="dataset folder (ignored by movielens_widedeep)")
    stats.add_argument("--format", default="lcrec", choices=sorted(READERS))
    down = sub.add_parser("download", help="fetch one category of a public Amazon review dump")
    down.add_argument("--source", choices=sorted(DUMP_URLS), required=True)
    down.add_argument("--category", required=True, help="e.g. Industrial_and_Scientific (2018), Beauty (2014)")
    down.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.action == "prepare" and bool(args.raw) == bool(args.ratings and args.meta):
        parser.error("prepare needs either --raw DIR or both --ratings and --meta")
    try:
        if args.action == "prepare":
            ratings, meta = find_dump_files(args.raw, args.source)[:2] if args.raw else (args.ratings, args.meta)
            catalog = load_amazon(args.source, ratings, meta, args.name, args.k, args.k)
            for path in write_lcrec(catalog, args.out, args.name):
                log.info("wrote %s", path)
            print(format_stats(catalog))
        elif args.action == "stats":
            print(format_stats(load_catalog(args.path, args.format)))
        else:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for url in dump_urls(args.source, args.category):
                print(f"downloading {url}", flush=True)
                print(f"wrote {download(url, out)}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
