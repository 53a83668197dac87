"""Can alignment SFT memorise a handful of seqrec samples? Train recall@10 / top-1 after a few epochs.

A diagnostic for learning rates, not a benchmark of speed: a model that cannot reproduce the answers of
32 training prompts after ten passes will not generalise either. This is how ``token_lr`` was found
(docs/results.md, "What moved the number 9×").

    PYTHONPATH=. python analyses/sft_memorise.py --lr 1e-3                   # LoRA, ID-token rows at the LoRA rate
    PYTHONPATH=. python analyses/sft_memorise.py --lr 1e-3 --token_lr 3e-2   # ID-token rows at their own rate
    PYTHONPATH=. python analyses/sft_memorise.py --lr 1e-4 --full            # full fine-tuning

Needs an index of the MovieLens-100K quickstart (runs/quickstart/index/ml-100k.index.json by default).
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from gream_lit.alignment.sft_data import AlignmentDataModule  # noqa: E402
from gream_lit.alignment.sft_module import SFTModule  # noqa: E402
from gream_lit.inference.constrained_beam import constrained_beam_search  # noqa: E402


def train_recall(module: SFTModule, rows: list[dict], beams: int = 10) -> tuple[float, float]:
    """Share of training prompts whose own answer is in the top ``beams`` / ranked first."""
    module.model.eval()
    tables = module.tables.to("cpu")
    hits = top1 = 0
    for row in rows:
        start = next(i for i, label in enumerate(row["labels"]) if label != -100)
        prompt = torch.tensor([row["input_ids"][:start]])
        answer = row["input_ids"][start:-1]  # the ID tokens, without the end-of-turn token
        result = constrained_beam_search(module.model, prompt, torch.ones_like(prompt), tables, beams)
        found = [result.tokens[0, b, : len(answer)].tolist() == answer for b in range(beams)]
        hits += any(found)
        top1 += found[0]
    return hits / len(rows), top1 / len(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="runs/quickstart/index/ml-100k.index.json")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--token_lr", type=float, default=None)
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = p.parse_args()

    L.seed_everything(0)
    off = {"enabled": False}
    tasks = {t: off for t in ("item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")}
    dm = AlignmentDataModule(
        format="movielens_widedeep",
        index_path=args.index,
        backbone="smollm2-135m-instruct",
        max_history=10,
        max_length=160,
        batch_size=8,
        val_users=4,
        max_eval_users=4,
        tasks={"seqrec": {"data_samples": args.samples}, **tasks},
    )
    lora = None if args.full else {"r": 16, "alpha": 32, "dropout": 0.0}
    module = SFTModule(
        lora=lora,
        token_lr=args.token_lr,
        embedding_init="text_mean",
        lr=args.lr,
        warmup_ratio=0.05,
        export_merged=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tempfile.mkdtemp(),  # hand-off files go there
    )
    trainer.fit(module, datamodule=dm)
    recall, top1 = train_recall(module, dm.train_data)
    loss = float(trainer.callback_metrics["sft/train/loss"])
    print(
        f"lr={args.lr} token_lr={args.token_lr} full={args.full} samples={args.samples} epochs={args.epochs}: "
        f"train recall@10 {recall:.3f}, top-1 {top1:.3f}, last loss {loss:.3f}"
    )


if __name__ == "__main__":
    main()
