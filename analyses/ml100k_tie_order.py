"""Why MovieLens-100K's test items are harder than its validation items: the reader orders a user's
ratings by timestamp, and equal timestamps by movie id (``data/readers/movielens.py``). When a user's last
ratings share a second, the test item is the highest movie id among them, and high ids are the catalogue's
rarer films. Prints, for the test, validation and third-to-last positions: how often the item shares its
timestamp with the one before it, how often its movie id is above 1,000, and how many training interactions
(``seq[:-2]`` of every user, what the models learn from) the item has, tied and not tied (docs/results.md, "The
quickstart on MovieLens-100K").

    PYTHONPATH=. python analyses/ml100k_tie_order.py
"""

import statistics
from collections import Counter

import pandas as pd

from gream_lit.data.readers import load_catalog
from gream_lit.data.readers.movielens import WIDEDEEP_FILES, widedeep_dir

POSITIONS = {"test (seq[-1])": -1, "validation (seq[-2])": -2, "seq[-3]": -3}


def main() -> None:
    catalog = load_catalog("", "movielens_widedeep")  # the sequences in the reader's own order
    ratings = pd.read_parquet(widedeep_dir() / WIDEDEEP_FILES["ratings"])
    stamp = {(str(u), str(m)): int(t) for u, m, t in zip(ratings["user_id"], ratings["movie_id"], ratings["timestamp"])}
    events = [
        [(stamp[user, catalog.item_ids[i]], int(catalog.item_ids[i])) for i in seq]
        for user, seq in zip(catalog.user_ids, catalog.sequences)
    ]
    train = Counter(movie for evs in events for _, movie in evs[:-2])
    print(f"{len(events)} users; training interactions: {sum(train.values())}")
    for name, pos in POSITIONS.items():
        tied = statistics.mean(evs[pos][0] == evs[pos - 1][0] for evs in events)
        high = statistics.mean(evs[pos][1] > 1000 for evs in events)
        counts = [train[evs[pos][1]] for evs in events]
        split = {
            label: statistics.mean(train[evs[pos][1]] for evs in events if (evs[pos][0] == evs[pos - 1][0]) == tie)
            for label, tie in (("tied", True), ("not tied", False))
        }
        print(
            f"{name}: same second as the item before {tied:.1%}, movie id > 1000 {high:.1%}, "
            f"training interactions of the item: mean {statistics.mean(counts):.1f} "
            f"(tied {split['tied']:.1f}, not tied {split['not tied']:.1f}), median {statistics.median(counts):.0f}"
        )


if __name__ == "__main__":
    main()
