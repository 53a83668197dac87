"""``python -m gream_lit teacher {cot,side-info}``: teacher-written chain-of-thought samples
(``curriculum.cot``) and user side information (``curriculum.teachers``), written ahead of a run."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict

from gream_lit.curriculum.cot import REWRITE_MODES, build_cot_dataset
from gream_lit.curriculum.teachers import KINDS, build_teacher, build_user_side_info
from gream_lit.data.readers import load_catalog
from gream_lit.data.semantic_index import SemanticIndex


def _teacher_kwargs(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--teacher_arg expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gream_lit teacher {cot,side-info} --data DIR ...``"""
    p = argparse.ArgumentParser(
        prog="gream_lit teacher", description="teacher-written data (docs/gream_spec.md §3, §5.2)"
    )
    p.add_argument("what", choices=("cot", "side-info"))
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", default="lcrec")
    p.add_argument("--index", help="semantic index json (cot only)")
    p.add_argument("--out", required=True, help="output jsonl (cot) or user.json (side-info)")
    p.add_argument("--teacher", default="template", choices=KINDS)
    p.add_argument("--teacher_arg", action="append", default=[], metavar="KEY=VALUE", help="teacher kwarg (JSON value)")
    p.add_argument("--cache", help="jsonl answer cache; reruns reuse it, interrupted runs resume")
    p.add_argument("--users", type=int, help="only the first N users")
    p.add_argument("--max_samples", type=int)
    p.add_argument("--rewrite", default="denoise", choices=REWRITE_MODES)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(list(argv) if argv is not None else None)
    catalog = load_catalog(args.data, args.format)
    teacher = build_teacher(args.teacher, catalog, args.cache, **_teacher_kwargs(args.teacher_arg))
    users = list(range(min(args.users, catalog.n_users))) if args.users else None
    t0 = time.perf_counter()
    if args.what == "side-info":
        info = build_user_side_info(catalog, teacher, users=users, out=args.out)
        n_users = len(info["user_explicit_preference"])
        print(f"wrote side information of {n_users} users to {args.out} in {time.perf_counter() - t0:.1f}s")
        return 0
    if not args.index:
        raise SystemExit("cot needs --index")
    index = SemanticIndex.from_json(args.index, n_items=catalog.n_items)
    samples, stats = build_cot_dataset(
        catalog, index, teacher, users, args.out, args.max_samples, seed=args.seed, rewrite=args.rewrite
    )
    print(json.dumps({**asdict(stats), "seconds": round(time.perf_counter() - t0, 2), "out": args.out}, indent=1))
    return 0
