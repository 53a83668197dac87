"""Direct-mode evaluation levers on a CPU: users/s of the exact trie beam search and top-10 agreement.

Runs a trained SmolLM2 LoRA adapter (a stage's ``hf/adapter`` folder) over the same seeded random
test users of Scientific, once per lever, each added on top of the previous row:

1. ``chat``: GREAM's chat prompt (system turn, instruction, ", " between IDs), LoRA unmerged, full
   vocabulary: the evaluation path before the compact format;
2. ``compact``: the compact prompt (``data.compact_format``) of the same users;
3. ``+merged``: LoRA merged into the weights;
4. ``+ids vocab``: logits and softmax over the ID tokens and EOS only (``vocab=`` of the search);
5. ``+bf16``: a bfloat16 copy of the merged model (``test_dtype: bfloat16``,
   ``inference.search_precision``);
6. ``+int8``: dynamic int8 quantisation of the decoder's fp32 linear layers (``torch.ao``), head in fp32.

Agreement is against row 3 (the merged full-vocabulary search over the same prompts): the share of
users whose top-10 lists are identical, and the share whose hit or miss at 10 is the same. For a model
trained with ``logits_vocab: ids``, row 4 is its exact search and row 3 scores a distribution it never
learned, so rows 3 and 4 are expected to differ (docs/benchmarks.md, "Direct-mode evaluation on a CPU").

    python benchmarks/bench_eval_cpu.py --adapter runs/align_dense_scientific/version_0/hf/adapter --users 256
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import AutoPeftModelForCausalLM  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from gream_lit.data import compact_format as compact  # noqa: E402
from gream_lit.data.padding import pad  # noqa: E402
from gream_lit.data.readers import load_catalog  # noqa: E402
from gream_lit.data.semantic_index import SemanticIndex  # noqa: E402
from gream_lit.data.split import leave_one_out  # noqa: E402
from gream_lit.inference import build_prefix_tables, constrained_beam_search, direct_prompt, index_token_ids  # noqa: E402
from gream_lit.inference.prefix_tables import id_vocab  # noqa: E402
from gream_lit.inference.search_precision import search_model  # noqa: E402

DATA = "../shared/data/amazon18_scientific"
INDEX = f"{DATA}/indexes/rkmeans_zcr/Scientific.index.json"


def batches_of(prompts: list[list[int]], pad_id: int, size: int) -> list[tuple[list[int], dict]]:
    """Length-sorted batches (one prefill shape per batch), with the users' positions."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = []
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        rows = [prompts[i] for i in idx]
        out.append(
            (
                idx,
                {
                    "input_ids": pad(rows, pad_id, left=True),
                    "attention_mask": pad([[1] * len(r) for r in rows], 0, left=True),
                },
            )
        )
    return out


@torch.no_grad()
def run(model, batches, tables, vocab, n: int) -> tuple[torch.Tensor, float]:
    items = torch.full((n, 10), -1, dtype=torch.long)
    start = time.perf_counter()
    for idx, b in batches:
        items[idx] = constrained_beam_search(model, b["input_ids"], b["attention_mask"], tables, 10, vocab).items
    return items, n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, help="a stage's hf/adapter folder (LoRA + ID-token rows + tokenizer)")
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_history", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", help="append the rows as JSON lines to this file")
    args = p.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.adapter)
    model = AutoPeftModelForCausalLM.from_pretrained(args.adapter, dtype=torch.float32).eval()
    index = SemanticIndex.from_json(INDEX)
    catalog = load_catalog(DATA, "lcrec")
    samples = random.Random(args.seed).sample(leave_one_out(catalog, args.max_history).test, args.users)
    targets = torch.tensor([s.target for s in samples])
    ids = index_token_ids(index, tokenizer)
    eos = tokenizer.eos_token_id
    tables = build_prefix_tables(ids, eos)
    vocab = id_vocab(index, tokenizer)
    rows = compact.item_rows(tokenizer, index)
    prefix = tokenizer(compact.COMPACT_PREFIX, add_special_tokens=False)["input_ids"]
    compact_prompts = [compact.history_prompt(prefix, s.history, rows, 256) for s in samples]
    chat_prompts = [
        tokenizer(direct_prompt(s.history[-20:], index, tokenizer), add_special_tokens=False)["input_ids"]
        for s in samples
    ]
    chat = batches_of(chat_prompts, tokenizer.pad_token_id, args.batch_size)
    comp = batches_of(compact_prompts, tokenizer.pad_token_id, args.batch_size)
    run(model, comp[:1], tables, None, args.users)  # warm-up

    results = []

    def record(name: str, items: torch.Tensor, users_s: float, tokens: list[list[int]], ref: torch.Tensor | None):
        hits = (items == targets.unsqueeze(1)).any(1)
        row = {
            "lever": name,
            "users": args.users,
            "prompt_tokens": sum(map(len, tokens)) / len(tokens),
            "users_s": users_s,
            "recall@10": hits.float().mean().item(),
        }
        if ref is not None:
            row["identical_top10"] = (items == ref).all(1).float().mean().item()
            row["same_hit@10"] = (hits == (ref == targets.unsqueeze(1)).any(1)).float().mean().item()
        results.append(row)
        print(json.dumps(row), flush=True)

    items, speed = run(model, chat, tables, None, args.users)
    record("chat, unmerged, full vocab", items, speed, chat_prompts, None)
    items, speed = run(model, comp, tables, None, args.users)
    record("compact, unmerged, full vocab", items, speed, compact_prompts, None)
    model.merge_adapter()
    ref, speed = run(model, comp, tables, None, args.users)
    record("compact, merged, full vocab", ref, speed, compact_prompts, ref)
    items, speed = run(model, comp, tables, vocab, args.users)
    record("compact, merged, ids vocab", items, speed, compact_prompts, ref)
    items, speed = run(search_model(model, "bfloat16"), comp, tables, vocab, args.users)
    record("compact, merged, ids vocab, bf16 copy", items, speed, compact_prompts, ref)
    base = model.get_base_model()
    quantized = torch.ao.quantization.quantize_dynamic(base.model, {torch.nn.Linear}, dtype=torch.qint8)
    base.model = quantized
    items, speed = run(model, comp, tables, vocab, args.users)
    record("compact, merged, ids vocab, int8 body", items, speed, compact_prompts, ref)

    print(f"\n{'lever':<44} {'tokens':>6} {'users/s':>8} {'recall@10':>9} {'same top10':>10} {'same hit':>8}")
    for r in results:
        same = f"{r['identical_top10']:.3f}" if "identical_top10" in r else "-"
        hit = f"{r['same_hit@10']:.3f}" if "same_hit@10" in r else "-"
        print(
            f"{r['lever']:<44} {r['prompt_tokens']:>6.1f} {r['users_s']:>8.2f} {r['recall@10']:>9.4f} {same:>10} {hit:>8}"
        )
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)


if __name__ == "__main__":
    main()
