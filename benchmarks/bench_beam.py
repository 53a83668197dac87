"""Our constrained beam search vs HF ``generate(prefix_allowed_tokens_fn=<trie>)``: speed and agreement.

Same model, same prompts (direct-mode chat prompts over real 20-item histories), same index, 10 beams.
HF ranks by ``sequences_scores`` with ``length_penalty=0`` (sum of log-probs, as ours), so the two top-10
lists should agree up to exact score ties. Prints users/s of both, the speed ratio and the share of
users whose lists agree.

    OMP_NUM_THREADS=1 python benchmarks/bench_beam.py --models tiny smollm2 --users 16
    python benchmarks/bench_beam.py --models smollm2-shape --device cuda --dtype bfloat16   # no real weights at hand
    python benchmarks/bench_beam.py --device cuda --dtype bfloat16 --users 256 --batch_size 64
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_sft import build_model  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

from gream_lit.data.readers import load_catalog  # noqa: E402
from gream_lit.data.semantic_index import SemanticIndex  # noqa: E402
from gream_lit.data.split import leave_one_out  # noqa: E402
from gream_lit.inference import (  # noqa: E402
    build_prefix_tables,
    constrained_beam_search,
    direct_prompt,
    index_token_ids,
    tokenize_left_padded,
)
from gream_lit.modeling.backbone import load_tokenizer  # noqa: E402
from gream_lit.modeling.vocab import add_index_tokens  # noqa: E402

DATA = "../shared/data/amazon18_scientific"
INDEX = f"{DATA}/indexes/rkmeans_zcr/Scientific.index.json"


def trie_fn(item_ids: torch.Tensor, eos: int, prompt_len: int):
    """The reference way: a Python dict trie queried per beam per step by HF generate."""
    paths = torch.where(item_ids >= 0, item_ids, torch.full_like(item_ids, eos)).tolist()
    children: dict[tuple[int, ...], set[int]] = {}
    for path in paths:
        for t in range(len(path)):
            children.setdefault(tuple(path[:t]), set()).add(path[t])
    allowed = {k: sorted(v) for k, v in children.items()}

    def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
        return allowed.get(tuple(sent[prompt_len:].tolist()), [eos])

    return fn


def run_ours(model, batches, tables, beams: int):
    out = [constrained_beam_search(model, b["input_ids"], b["attention_mask"], tables, beams) for b in batches]
    return torch.cat([o.items for o in out]), torch.cat([o.scores for o in out])


def run_hf(model, batches, item_ids, tables, eos: int, beams: int):
    config = GenerationConfig(
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=tables.steps,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        eos_token_id=eos,
        pad_token_id=eos,
        output_scores=True,
        return_dict_in_generate=True,
    )
    items, scores = [], []
    for b in batches:
        width = b["input_ids"].shape[1]
        gen = model.generate(**b, generation_config=config, prefix_allowed_tokens_fn=trie_fn(item_ids, eos, width))
        seqs = gen.sequences[:, width:]
        if seqs.shape[1] < tables.steps:
            seqs = torch.nn.functional.pad(seqs, (0, tables.steps - seqs.shape[1]), value=eos)
        items.append(tables.sequence_items(seqs).view(-1, beams))
        scores.append(gen.sequences_scores.view(-1, beams).float())
    return torch.cat(items), torch.cat(scores)


def agreement(a_items, a_scores, b_items, b_scores, atol: float) -> tuple[float, float]:
    """Share of users with identical lists, and share whose lists agree up to ties: every rank holds
    the same item or two items whose scores differ by less than ``atol`` (numerical noise between
    batch shapes), so neither search missed a better hypothesis."""
    same = (a_items == b_items).all(1)
    tied = (a_items == b_items) | torch.isclose(a_scores, b_scores, atol=atol, rtol=0)
    return same.float().mean().item(), tied.all(1).float().mean().item()


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - start


def bench(name: str, args) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    index = SemanticIndex.from_json(args.index)
    tokenizer = load_tokenizer()
    add_index_tokens(tokenizer, index)
    model = build_model(name, tokenizer).to(device=device, dtype=dtype).eval()
    catalog = load_catalog(args.data, "lcrec")
    split = leave_one_out(catalog, 20)
    samples = [s for s in split.test + split.valid + split.train if len(s.history) == 20][: args.users]
    if len(samples) < args.users:
        raise SystemExit(f"{args.data} has only {len(samples)} samples with 20-item histories")
    prompts = [direct_prompt(s.history, index, tokenizer) for s in samples]
    batches = [
        tokenize_left_padded(prompts[i : i + args.batch_size], tokenizer, device)
        for i in range(0, len(prompts), args.batch_size)
    ]
    item_ids = index_token_ids(index, tokenizer)
    eos = tokenizer.eos_token_id
    tables = build_prefix_tables(item_ids, eos).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        run_ours(model, batches[:1], tables, args.beams)  # warm-up
        run_hf(model, batches[:1], item_ids, tables, eos, args.beams)
        (ours_items, ours_scores), t_ours = timed(lambda: run_ours(model, batches, tables, args.beams), sync)
        (hf_items, hf_scores), t_hf = timed(lambda: run_hf(model, batches, item_ids, tables, eos, args.beams), sync)
    atol = 1e-3 if dtype == torch.float32 else 5e-2
    identical, agree = agreement(ours_items, ours_scores, hf_items, hf_scores, atol)
    return {
        "model": name,
        "device": args.device,
        "dtype": args.dtype,
        "users": len(samples),
        "prompt_tokens": int(sum(b["attention_mask"].sum() for b in batches) / len(samples)),
        "ours_users_s": len(samples) / t_ours,
        "hf_users_s": len(samples) / t_hf,
        "ratio": t_hf / t_ours,
        "identical": identical,
        "agree": agree,
        "max_score_diff": (ours_scores - hf_scores).abs().max().item(),
        "hf_invalid": (hf_items < 0).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2", "smollm2-shape"]
    )
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--index", default=INDEX)
    parser.add_argument("--jsonl", help="also append each model's result as one JSON line to this file")
    args = parser.parse_args(argv)
    rows = [bench(name, args) for name in args.models]
    print(
        f"device={args.device} dtype={args.dtype} beams={args.beams} batch={args.batch_size} threads={torch.get_num_threads()}"
    )
    print(
        f"{'model':<13} {'users':>5} {'prompt':>6} {'ours u/s':>9} {'HF u/s':>8} {'ratio':>6} "
        f"{'same':>5} {'agree':>5} {'max|dS|':>8} {'HF invalid':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:<13} {r['users']:>5} {r['prompt_tokens']:>6} {r['ours_users_s']:>9.2f} {r['hf_users_s']:>8.2f} "
            f"{r['ratio']:>6.2f} {r['identical']:>5.2f} {r['agree']:>5.2f} {r['max_score_diff']:>8.1e} "
            f"{r['hf_invalid']:>10.3f}"
        )
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
