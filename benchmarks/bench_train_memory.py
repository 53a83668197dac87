"""Peak resident memory and step time of SFT training steps on the longest batches of a config.

The peak RSS of a training stage is set by its longest padded batches (rows x length), not by the
average one. This fits an SFT config (e.g. ``experiments/align_dense_scientific.yaml``) for a few steps
on the ``--batches`` longest batches of its training set (rows sorted by length, batch size from the
config), once per ``checkpoint_tokens`` setting, each in a fresh process so that ``ru_maxrss`` is that
setting's own peak. The gradients are the same with and without checkpointing
(``tests/test_checkpointing.py``); only memory and time differ. The allocator is set as the CLI sets
it (``gream_lit.experiment.allocator``); ``GREAM_MMAP_THRESHOLD=0`` measures glibc's default behaviour.

    python benchmarks/bench_train_memory.py --config experiments/align_dense_scientific.yaml \
        --checkpoint_tokens none 1024 2048 --batches 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def one(config: str, checkpoint_tokens: int | None, batches: int, sample: str) -> dict:
    """Fit ``batches`` steps in this process (the longest batches, or random ones with the config's
    batch size); returns peak RSS and step time."""
    import lightning as L
    from torch.utils.data import DataLoader

    from gream_lit.experiment.allocator import fix_mmap_threshold
    from gream_lit.experiment.composition import compose_file

    fix_mmap_threshold()  # as the CLI does; GREAM_MMAP_THRESHOLD=0 measures glibc's default
    cfg = compose_file(config)
    data_cfg, model_cfg = cfg["data"], cfg["model"]
    dm_cls = _import(data_cfg["class_path"])
    model_cls = _import(model_cfg["class_path"])
    dm = dm_cls(**data_cfg["init_args"])
    dm.setup("fit")
    size = dm.batch_size
    if sample == "longest":
        rows = sorted(dm.train_data, key=lambda r: len(r["input_ids"]), reverse=True)[: size * batches]
    else:
        rows = random.Random(0).sample(list(dm.train_data), size * batches)
    dm.train_dataloader = lambda: DataLoader(rows, batch_size=size, shuffle=False, collate_fn=dm._collate_train)
    dm.val_dataloader = lambda: []
    export = tempfile.mkdtemp(prefix="bench_train_memory_")
    model = model_cls(**{**model_cfg["init_args"], "checkpoint_tokens": checkpoint_tokens, "export_dir": export})
    times: list[float] = []

    class StepTimer(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            self.t = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            times.append(time.perf_counter() - self.t)

    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[StepTimer()],
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    shutil.rmtree(export, ignore_errors=True)
    return {
        "checkpoint_tokens": checkpoint_tokens,
        "tokens_per_batch": round(sum(len(r["input_ids"]) for r in rows) / batches),
        "peak_rss_gb_after_data": round(rss_setup, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "s_per_step": round(sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else times[0], 2),
    }


def _import(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="experiments/align_dense_scientific.yaml")
    p.add_argument("--checkpoint_tokens", nargs="+", default=["none", "2048"])
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--sample", choices=("longest", "random"), default="longest")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    settings = [None if v == "none" else int(v) for v in args.checkpoint_tokens]
    if args.one:
        print(json.dumps(one(args.config, settings[0], args.batches, args.sample)))
        return
    print(
        f"{args.sample} batches of {args.config}, GREAM_MMAP_THRESHOLD={os.environ.get('GREAM_MMAP_THRESHOLD', 'default')}"
    )
    print("| checkpoint_tokens | tokens per batch (unpadded) | peak RSS after data (GB) | peak RSS (GB) | s/step |")
    print("|---|---|---|---|---|")
    for value in args.checkpoint_tokens:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--config",
            args.config,
            "--checkpoint_tokens",
            value,
            "--batches",
            str(args.batches),
            "--sample",
            args.sample,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(
            f"| {value} | {r['tokens_per_batch']} | {r['peak_rss_gb_after_data']} | {r['peak_rss_gb']} | {r['s_per_step']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
