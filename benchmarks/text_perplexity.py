"""Does an aligned model keep its language? Perplexity on item titles and on generic English, per model.

Scores each model (a backbone name such as ``smollm2-135m-instruct[:4]``, a local folder, or a stage's
``hf/adapter`` bundle, merged onto its base chain) on the same texts, over the full vocabulary:

- ``titles``: a seeded sample of the catalogue's item titles, each scored on its own. An alignment that trains
  IDs only (the quickstart's ``seqdense`` rows) never sees a title, so every title is held out;
- ``generic``: ``benchmarks/data/generic_text.txt``, public-domain English prose, one text per line.

The first model is the reference: the table gives each model's perplexity and its ratio to the first's.

    python benchmarks/text_perplexity.py smollm2-135m-instruct[:4] runs/quickstart/align/hf/adapter \
        runs/quickstart/curriculum/hf/adapter --format movielens_widedeep
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gream_lit.data.readers import load_catalog  # noqa: E402
from gream_lit.inference.text_perplexity import perplexity, text_nll  # noqa: E402
from gream_lit.modeling.backbone import load_causal_lm, load_tokenizer  # noqa: E402

GENERIC = Path(__file__).parent / "data" / "generic_text.txt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "models", nargs="+", help="backbone names, folders or hf/adapter bundles; the first is the reference"
    )
    p.add_argument("--data_dir", default="", help="catalogue folder (empty for movielens_widedeep)")
    p.add_argument("--format", default="lcrec", help="catalogue reader")
    p.add_argument("--titles", type=int, default=300, help="seeded sample of item titles")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    catalog = load_catalog(Path(args.data_dir) if args.data_dir else "", args.format)
    titles = [it["title"] for it in catalog.items if it.get("title")]
    titles = random.Random(args.seed).sample(titles, min(args.titles, len(titles)))
    texts = {"titles": titles, "generic": [t for t in GENERIC.read_text().splitlines() if t.strip()]}
    rows = []
    for name in args.models:
        start = time.perf_counter()
        model, tokenizer = load_causal_lm(name), load_tokenizer(name)
        scores = {part: text_nll(model, tokenizer, part_texts) for part, part_texts in texts.items()}
        rows.append((name, {part: perplexity(*s) for part, s in scores.items()}, scores, time.perf_counter() - start))
        del model
    ref = rows[0][1]
    print(f"{len(titles)} titles of {catalog.name} (seed {args.seed}), {len(texts['generic'])} generic lines")
    print("| model | titles ppl | × first | generic ppl | × first | tokens (titles, generic) | s |")
    print("|---|---|---|---|---|---|---|")
    for name, ppl, scores, seconds in rows:
        print(
            f"| {name} | {ppl['titles']:.1f} | {ppl['titles'] / ref['titles']:.2f} | {ppl['generic']:.1f} | "
            f"{ppl['generic'] / ref['generic']:.2f} | {scores['titles'][1]}, {scores['generic'][1]} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
