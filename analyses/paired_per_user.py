"""Paired comparison of two per-user result files on the users both scored.

Any two ``test_per_user.jsonl`` files (a stage's own test, a ``test --mode reasoning`` rerun in
``eval_reasoning/``, another stage or run): each metric with its 95% bootstrap interval over users, and
the difference A - B with its interval and a paired t-test.

    PYTHONPATH=. python analyses/paired_per_user.py runs/X/curriculum/eval_reasoning/test_per_user.jsonl \\
        runs/X/curriculum/test_per_user.jsonl --names reasoning direct
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gream_lit.experiment.per_user import read_per_user
from gream_lit.stats import align, bootstrap_interval, fmt, paired_comparison, rank_metric


def compare(a_path: str, b_path: str, names: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """Markdown rows: per metric, A and B with intervals and A - B with its interval and p-value."""
    users, a, b = align(read_per_user(a_path), read_per_user(b_path))
    rows = [
        f"| metric ({len(users)} users) | {names[0]} | {names[1]} | {names[0]} - {names[1]} | p |",
        "|---|---|---|---|---|",
    ]
    for metric in metrics:
        va, vb = rank_metric(a, metric), rank_metric(b, metric)
        ia, ib, diff = bootstrap_interval(va), bootstrap_interval(vb), paired_comparison(va, vb)
        d = diff.diff
        rows.append(
            f"| {metric} | {fmt(ia.mean)} [{fmt(ia.low)}, {fmt(ia.high)}] | {fmt(ib.mean)} [{fmt(ib.low)}, "
            f"{fmt(ib.high)}] | {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] | {diff.p_value:.3f} |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", nargs=2, default=["A", "B"])
    parser.add_argument("--metrics", nargs="+", default=["recall@10", "ndcg@10"])
    args = parser.parse_args(argv)
    print("\n".join(compare(args.a, args.b, args.names, args.metrics)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
