"""SRPO rollout speed: generated tokens/s of ``RolloutEngine.generate`` and scored tokens/s of its
``logprobs`` (the PPO forward), with peak memory, on real RL prompts (Scientific, reasoning mode).

A timing, not a comparison: there is no second implementation to agree with. Random-weight models
rarely emit the end-of-sequence token, so responses run to ``--max_new_tokens`` and the count is stable;
only tokens up to and including the first end-of-sequence token are counted.

    OMP_NUM_THREADS=2 python benchmarks/rollout_speed.py --model tiny --prompts 2 --n 2 --max_new_tokens 8
    python benchmarks/rollout_speed.py --model qwen3-0.6b --device cuda --dtype bf16 --prompts 32 --n 10
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_sft import DATA, INDEX, MODELS, PeakMemory, build_model  # noqa: E402

from gream_lit.inference.sampling import RolloutEngine, SamplingConfig  # noqa: E402
from gream_lit.modeling.backbone import load_tokenizer  # noqa: E402
from gream_lit.modeling.vocab import add_index_tokens  # noqa: E402
from gream_lit.rl.rl_data import RLDataModule  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bench(args) -> dict:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dm = RLDataModule(args.data, index_path=args.index, mode="reason", max_train_prompts=args.prompts, seed=args.seed)
    dm.setup("fit")
    messages = [row["messages"] for row in dm.train_set]
    tokenizer = load_tokenizer()
    add_index_tokens(tokenizer, dm.index)
    model = build_model(args.model, tokenizer).to(device=device, dtype=DTYPES[args.dtype])
    engine = RolloutEngine(tokenizer, forward_batch_size=args.forward_batch_size)
    sampling = SamplingConfig(n=args.n, max_new_tokens=args.max_new_tokens)
    torch.manual_seed(args.seed)
    engine.generate(model, messages[:1], SamplingConfig(n=1, max_new_tokens=2))  # warm-up
    with PeakMemory(device) as memory:
        sync()
        start = time.perf_counter()
        rollout = engine.generate(model, messages, sampling)
        sync()
        t_generate = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            engine.logprobs(model, rollout)
            sync()
            t_logprobs = time.perf_counter() - start
    tokens = int(rollout.response_mask.sum())
    scored = int(torch.cat([rollout.prompt_mask, rollout.response_mask], 1).sum())
    return {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "prompts": len(messages),
        "n": args.n,
        "prompt_tokens": int(rollout.prompt_mask.sum()) // len(rollout),
        "generated_tokens": tokens,
        "generate_tokens_s": tokens / t_generate,
        "logprob_tokens_s": scored / t_logprobs,
        "peak_mib": memory.peak_mib,
    }


def print_table(r: dict) -> None:
    peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
    print(f"model={r['model']} device={r['device']} dtype={r['dtype']} threads={torch.get_num_threads()}")
    print(
        f"{'prompts':>7} {'n':>3} {'prompt tok':>10} {'generated':>9} {'gen tok/s':>10} {'logprob tok/s':>13} {'peak MiB':>9}"
    )
    print(
        f"{r['prompts']:>7} {r['n']:>3} {r['prompt_tokens']:>10} {r['generated_tokens']:>9} "
        f"{r['generate_tokens_s']:>10.1f} {r['logprob_tokens_s']:>13.1f} {peak:>9}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=MODELS)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=10, help="responses per prompt (GREAM: 10)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--forward_batch_size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--index", default=INDEX)
    parser.add_argument("--jsonl", help="also append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    result = bench(args)
    print_table(result)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
