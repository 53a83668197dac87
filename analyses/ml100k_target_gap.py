"""Is a MovieLens-100K val/test gap in the prompts or in the targets? Scores one stage hand-off on every
user under four (history -> target) pairs: validation, test, the validation prompt with the test target,
and a one-item-shorter prompt with the validation target (docs/results.md, "The quickstart on MovieLens-100K").

    PYTHONPATH=. python analyses/ml100k_target_gap.py <run>/hf/adapter
"""

import argparse
import time
from collections.abc import Callable

import torch

from gream_lit import load_recommender
from gream_lit.data.padding import pad
from gream_lit.data.readers import load_catalog
from gream_lit.metrics import hit_rank, ndcg_at_k, recall_at_k

PAIRS: dict[str, tuple[Callable[[list[int]], list[int]], Callable[[list[int]], int]]] = {
    "validation: seq[:-2] -> seq[-2]": (lambda s: s[:-2], lambda s: s[-2]),
    "test: seq[:-1] -> seq[-1]": (lambda s: s[:-1], lambda s: s[-1]),
    "validation prompt, test target: seq[:-2] -> seq[-1]": (lambda s: s[:-2], lambda s: s[-1]),
    "shorter prompt, validation target: seq[:-3] -> seq[-2]": (lambda s: s[:-3], lambda s: s[-2]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="an LLM stage's hand-off folder (hf/adapter or hf/model)")
    args = parser.parse_args()
    rec = load_recommender(args.bundle)
    catalog = load_catalog("", format="movielens_widedeep")
    if list(catalog.item_ids) != rec.item_ids:
        raise SystemExit(f"{args.bundle}: its catalogue is not MovieLens-100K's as read here")
    ids = rec.item_ids
    seqs = [s for s in catalog.sequences if len(s) >= 4]
    for name, (history, target) in PAIRS.items():
        start = time.time()
        ranked = rec.recommend_many([[ids[i] for i in history(s)] for s in seqs], k=10, batch_size=50)
        rank = hit_rank(
            pad([[rec.position[i] for i in r] for r in ranked], -1), torch.tensor([target(s) for s in seqs])
        )
        recall, ndcg = recall_at_k(rank, 10).mean().item(), ndcg_at_k(rank, 10).mean().item()
        print(f"{name}: {len(seqs)} users, Recall@10 {recall:.4f}, NDCG@10 {ndcg:.4f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
