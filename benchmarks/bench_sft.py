"""Our SFT training step vs a plain HF training loop: tokens/s, peak memory and equal losses.

Same model (same initial weights), same alignment samples (real Scientific data, SmolLM2 tokenizer with
the semantic-ID tokens), same batch size, same AdamW. The two paths differ only where ours is meant to:

* ours: ``AlignmentDataModule.train_dataloader`` (length-bucketed batches) and
  ``SFTModule.training_step`` (vocabulary projection on the labelled positions only);
* reference: random batches padded to their longest row (``DataCollatorForSeq2Seq``) and
  ``model(..., labels=...).loss`` (full ``[B, T, V]`` logits).

Agreement: ours is also run on the reference's batches from the same initial weights; the first
``--agree_steps`` losses must match. Tokens/s counts real (non-padding) tokens; the first step of each
run is a warm-up and is not timed; ``--repeats`` keeps each path's fastest run. Peak memory: CUDA
``max_memory_allocated``; CPU the rise of the process's peak RSS (``VmHWM``, reset before each run,
freed heap trimmed) over its RSS before the run's model copy.
``--dtype bf16`` runs under bf16 autocast with fp32 weights, as Lightning's ``bf16-mixed``.

    OMP_NUM_THREADS=2 python benchmarks/bench_sft.py                       # small random model, CPU
    python benchmarks/bench_sft.py --model smollm2 --samples 64 --batch_size 4
    python benchmarks/bench_sft.py --model qwen3-0.6b --device cuda --dtype bf16 --samples 1024 --batch_size 16
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import gc
import json
import os
import random
import re
import time
from collections.abc import Callable
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    DataCollatorForSeq2Seq,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from gream_lit.alignment.sft_data import AlignmentDataModule  # noqa: E402
from gream_lit.alignment.sft_module import SFTModule  # noqa: E402
from gream_lit.modeling.attention import avoid_cudnn_attention  # noqa: E402
from gream_lit.modeling.backbone import DEFAULT_BACKBONE, load_backbone, resolve  # noqa: E402
from gream_lit.modeling.lora import LoraOptions, apply_lora  # noqa: E402
from gream_lit.modeling.tiny import tiny_causal_lm  # noqa: E402
from gream_lit.modeling.vocab import require_index_tokens  # noqa: E402

DATA = "../shared/data/amazon18_scientific"
INDEX = f"{DATA}/indexes/rkmeans_zcr/Scientific.index.json"
TASKS = ("seqrec", "item2index", "index2item", "fusionseqrec")  # those that need no teacher side info
MODELS = ("tiny", "small", "smollm2", "smollm2-shape", "qwen3-0.6b")


def build_model(name: str, tokenizer) -> torch.nn.Module:
    """fp32 causal LM over the tokenizer's vocabulary (random weights except ``smollm2``).

    ``smollm2-shape`` is SmolLM2-135M-Instruct's architecture (its config.json) with random weights:
    it times the same as ``smollm2`` where the real weights cannot be had (a bare GPU machine).
    """
    vocab = len(tokenizer)
    if name == "tiny":
        return tiny_causal_lm(vocab, hidden_size=64, num_layers=2, seed=0)
    if name == "small":
        return tiny_causal_lm(vocab, hidden_size=256, num_layers=4, num_heads=4, seed=0)
    if name in ("smollm2", "smollm2-shape"):
        if name == "smollm2":
            model, _ = load_backbone(DEFAULT_BACKBONE)
        else:
            torch.manual_seed(0)
            config = AutoConfig.from_pretrained(resolve(DEFAULT_BACKBONE))
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # distinct random rows for the ID tokens: the mean-matched default can give every new token the
        # same row (it falls back to the mean when the covariance is not positive definite), so items tie
        torch.manual_seed(0)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        return model
    if name == "qwen3-0.6b":
        torch.manual_seed(0)
        config = Qwen3Config(
            vocab_size=max(vocab, 151936),
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
        return Qwen3ForCausalLM(config)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def alignment_data(args) -> AlignmentDataModule:
    """Alignment samples of the real catalogue, cut to ``args.samples`` at random."""
    per_task = -(-args.samples // len(TASKS))
    tasks = {t: {"data_samples": per_task} for t in TASKS}
    dm = AlignmentDataModule(
        index_path=args.index,
        tasks=tasks,
        max_length=args.max_length,
        val_users=1,
        bucket_window=args.bucket_window,
        seed=args.seed,
        data_dir=args.data,
        format="lcrec",
        batch_size=args.batch_size,
    )
    dm.setup("fit")
    if len(dm.train_data) < args.samples:
        raise ValueError(f"{args.data}: only {len(dm.train_data)} alignment samples, asked for {args.samples}")
    dm.train_data = random.Random(args.seed).sample(dm.train_data, args.samples)
    return dm


def reference_batches(dm: AlignmentDataModule, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random batches, right-padded to their longest row by the stock HF collator."""
    dm.tokenizer.padding_side = "right"
    collate = DataCollatorForSeq2Seq(dm.tokenizer, padding="longest", label_pad_token_id=-100, return_tensors="pt")
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dm.train_data]
    loader = DataLoader(
        rows, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), collate_fn=collate
    )
    return [dict(b) for b in loader]


def vm_hwm_kib() -> int | None:
    """Peak RSS of this process in KiB (Linux), or None where ``/proc`` is not available."""
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except OSError:
        return None


def vm_rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except OSError:
        return None


def release_freed_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so RSS starts from what is in use."""
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


class PeakMemory:
    """Peak memory of one run in MiB: CUDA allocator peak, or the CPU peak-RSS rise (``None`` if unknown)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        self.peak_mib = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_freed_heap()  # else a run would reuse the previous run's freed pages unseen
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                self.start = vm_rss_kib()
            except OSError:
                self.start = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.start is not None:
            self.peak_mib = (vm_hwm_kib() - self.start) / 1024


def ours_step(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    avoid_cudnn_attention(next(model.parameters()).device)  # as SFTModule.setup does
    module = SFTModule()
    module.model = model
    return lambda batch: module.training_step(batch, 0)


def reference_step(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(True)  # PyTorch's default, what a plain HF loop gets
    return lambda batch: (
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    )


def train(
    init: torch.nn.Module, make_step, batches: list[dict], args, device: torch.device
) -> dict[str, float | list[float] | None]:
    """Train a fresh copy of ``init`` on ``batches``; losses of every step, timing of all but the first."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    torch.manual_seed(args.seed)  # same dropout masks (LoRA) in every run on the same batches
    with PeakMemory(device) as memory:
        model = copy.deepcopy(init).to(device).train()
        step = make_step(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        losses, tokens, padded, start = [], 0, 0, 0.0
        for i, batch in enumerate(batches):
            if i == 1:
                sync()
                start = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss = step(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if i >= 1:
                tokens += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
        sync()
        seconds = time.perf_counter() - start
        del model, optimizer, step
    return {
        "losses": losses,
        "tokens": tokens,
        "tokens_s": tokens / seconds,
        "pad_share": 1 - tokens / padded,
        "peak_mib": memory.peak_mib,
        "steps": len(batches) - 1,
    }


def best_of(init: torch.nn.Module, make_step, batches: list[dict], args, device: torch.device) -> dict:
    """Fastest of ``args.repeats`` runs (the least disturbed by other processes on a shared machine)."""
    runs = [train(init, make_step, batches, args, device) for _ in range(args.repeats)]
    return max(runs, key=lambda run: run["tokens_s"])


def bench(args) -> dict:
    device = torch.device(args.device)
    dm = alignment_data(args)
    init = build_model(args.model, dm.tokenizer)
    if args.lora:
        init = apply_lora(init, LoraOptions(), require_index_tokens(dm.tokenizer, dm.index))
    ours_batches = list(dm.train_dataloader())
    ref_batches = reference_batches(dm, args.batch_size, args.seed)
    ours, ref = (
        best_of(init, ours_step, ours_batches, args, device),
        best_of(init, reference_step, ref_batches, args, device),
    )
    n = min(args.agree_steps, len(ref_batches))
    check = train(init, ours_step, ref_batches[:n], args, device)
    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(check["losses"], ref["losses"][:n]))
    tolerance = 1e-3 if args.dtype == "fp32" else 3e-2
    return {
        "model": args.model + ("+lora" if args.lora else ""),
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "samples": args.samples,
        "ours": ours,
        "ref": ref,
        "ratio_tokens_s": ours["tokens_s"] / ref["tokens_s"],
        "ratio_peak": (ours["peak_mib"] / ref["peak_mib"]) if ours["peak_mib"] and ref["peak_mib"] else None,
        "agree": diff <= tolerance,
        "max_rel_loss_diff": diff,
        "agree_steps": n,
    }


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def print_table(r: dict) -> None:
    print(
        f"model={r['model']} device={r['device']} dtype={r['dtype']} batch={r['batch_size']} samples={r['samples']} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'path':<10} {'steps':>5} {'tokens':>8} {'pad %':>6} {'tokens/s':>10} {'peak MiB':>9} {'first loss':>10}")
    for name in ("ours", "ref"):
        x = r[name]
        print(
            f"{name:<10} {x['steps']:>5} {x['tokens']:>8} {100 * x['pad_share']:>6.1f} {x['tokens_s']:>10.1f} "
            f"{mib(x['peak_mib']):>9} {x['losses'][0]:>10.4f}"
        )
    peak = "n/a" if r["ratio_peak"] is None else f"{r['ratio_peak']:.2f}x"
    print(
        f"ratio ours/ref: tokens/s {r['ratio_tokens_s']:.2f}x, peak memory {peak}; "
        f"agree: {'yes' if r['agree'] else 'NO'} (max relative loss difference {r['max_rel_loss_diff']:.1e} "
        f"over the first {r['agree_steps']} steps on the same batches)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=MODELS)
    parser.add_argument("--lora", action="store_true", help="LoRA (default options, ID-token rows trainable)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--bucket_window", type=int, default=50, help="batches per length-sorting window (ours)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--agree_steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="runs per path; the fastest is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--index", default=INDEX)
    parser.add_argument("--jsonl", help="also append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    if args.bucket_window < 1:
        parser.error("--bucket_window must be >= 1: ours is the bucketed path")
    result = bench(args)
    print_table(result)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
