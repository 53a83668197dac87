"""Alignment training throughput: fixed-row batches against padded-token budgets (``max_tokens``).

Dense ID-sequence rows are short (Scientific, shipped 4-level index: ~22 tokens each), so a batch of 4 rows leaves the step's
fixed cost (optimizer, LoRA, the ID-token head) paid for a handful of targets. ``AlignmentDataModule
(max_tokens=N)`` packs as many length-sorted rows as fit N padded tokens. Each setting trains the same
model from the same seed for ``--steps`` steps on real data; the first ``--warmup`` steps are not timed.
Targets are labelled positions (the loss's terms), so targets/s is learning per CPU-second.

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/bench_align_budget.py                   # batch 4 vs 256/512/1024
    PYTHONPATH=. python benchmarks/bench_align_budget.py --budgets 0 512 --steps 20 --index runs/x/index/items.index.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402

from gream_lit.alignment.sft_data import AlignmentDataModule  # noqa: E402
from gream_lit.alignment.sft_module import SFTModule  # noqa: E402

DATA = "../shared/data/amazon18_scientific"
INDEX = f"{DATA}/indexes/rkmeans_zcr/Scientific.index.json"
OFF = ("seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")


class StepTimer(L.Callback):
    """Wall time, padded tokens and targets of every training step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.targets: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.tokens.append(int(batch["attention_mask"].numel()))
        self.targets.append(int((batch["labels"] != -100).sum()))


def measure(args: argparse.Namespace, max_tokens: int | None) -> dict[str, float]:
    L.seed_everything(args.seed)
    data = AlignmentDataModule(
        index_path=args.index,
        data_dir=args.data,
        tasks={name: {"enabled": False} for name in OFF} | {"seqdense": {"enabled": True}},
        backbone=args.backbone,
        prompt_format="compact",
        batch_size=args.batch_size,
        val_users=10,
        max_tokens=max_tokens,
    )
    model = SFTModule(
        lora={"r": 16, "alpha": 32, "dropout": 0.05},
        embedding_init="text_mean",
        lr=1.0e-3,
        token_lr=0.02,
        warmup_ratio=0.02,
        lr_schedule="linear",
        logits_vocab="ids",
        stage="align",
    )
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        gradient_clip_val=1.0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    seconds, targets = timer.seconds[args.warmup :], timer.targets[args.warmup :]
    return {
        "step_s": statistics.median(seconds),
        "padded_tokens": statistics.mean(timer.tokens[args.warmup :]),
        "targets_per_step": statistics.mean(targets),
        "targets_per_s": sum(targets) / sum(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--index", default=INDEX)
    parser.add_argument("--backbone", default="smollm2-135m-instruct[:4]")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 256, 512, 1024], help="0: fixed-row batches")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rows = [(budget, measure(args, budget or None)) for budget in args.budgets]
    base = rows[0][1]["targets_per_s"]
    print("| batches | median step | padded tokens/step | targets/step | targets/s | vs first row |")
    print("|---|---:|---:|---:|---:|---:|")
    for budget, r in rows:
        label = f"max_tokens {budget}" if budget else f"{args.batch_size} rows"
        print(
            f"| {label} | {r['step_s']:.3f} s | {r['padded_tokens']:.0f} | {r['targets_per_step']:.1f} | "
            f"{r['targets_per_s']:.0f} | {r['targets_per_s'] / base:.2f}× |"
        )


if __name__ == "__main__":
    main()
