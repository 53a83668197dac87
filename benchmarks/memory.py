"""Peak resident memory, time and disk of every stage and phase of a pipeline run.

Every stage run through the CLI writes ``resources.json`` (``gream_lit.experiment.resource_usage``: RSS sampled
every 0.2 s, charged to load / train / validate / test). This prints them as one table, with each
stage's disk footprint (checkpoints, hand-off folder, the rest) and its largest checkpoint file. With
``--config`` it first runs the experiment into ``--run_dir`` (one process per stage, so every stage's
peak is its own, as in a fresh ``fit --stage S``).

    python benchmarks/memory.py runs/quickstart
    python benchmarks/memory.py --config experiments/quickstart.yaml --run_dir /tmp/quickstart_mem
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gream_lit.experiment.preflight import load_experiment  # noqa: E402
from gream_lit.experiment.resource_usage import read_resources  # noqa: E402
from gream_lit.experiment.run_directory import RunDir  # noqa: E402

PHASES = ("load", "train", "validate", "test")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def gb(n: float) -> str:
    return f"{n / 2**30:.2f}"


def table(run_dir: Path, walls: dict[str, float] | None = None) -> str:
    run = RunDir(run_dir)
    exp = run.experiment()
    head = (
        "| stage | "
        + " | ".join(f"{p} peak GB (s)" for p in PHASES)
        + " | stage peak GB | disk GB (ckpt / hf) | largest ckpt MB |"
    )
    lines = [head, "|" + "---|" * (len(PHASES) + 4)]
    for stage in exp["stages"]:
        folder = run.stage_dir(stage)
        record = read_resources(folder) or {"phases": {}, "peak_rss_gb": float("nan")}
        cells = []
        for phase in PHASES:
            p = record["phases"].get(phase)
            cells.append(f"{p['peak_rss_gb']:.2f} ({p['seconds']:.0f})" if p else "–")
        ckpts = list((folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []
        largest = max((c.stat().st_size for c in ckpts), default=0) / 2**20
        disk = f"{gb(folder_bytes(folder))} ({gb(folder_bytes(folder / 'checkpoints'))} / {gb(folder_bytes(folder / 'hf'))})"
        wall = f", {walls[stage]:.0f} s wall" if walls and stage in walls else ""
        lines.append(
            f"| {stage}{wall} | " + " | ".join(cells) + f" | {record['peak_rss_gb']:.2f} | {disk} | {largest:.0f} |"
        )
    lines.append(f"\nrun directory: {gb(folder_bytes(run_dir))} GB")
    return "\n".join(lines)


def run_stages(config: str, run_dir: Path, sets: list[str]) -> dict[str, float]:
    """Each stage in its own process (``fit --stage S``); returns wall seconds per stage."""
    exp = load_experiment(config)
    walls = {}
    for stage in exp["stages"]:
        cmd = [
            sys.executable,
            "-m",
            "gream_lit",
            "fit",
            "--config",
            config,
            "--run_dir",
            str(run_dir),
            "--stage",
            stage,
        ]
        for s in sets:
            cmd += ["--set", s]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        walls[stage] = time.perf_counter() - start
    return walls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a run directory to tabulate")
    p.add_argument("--config", help="run this experiment first")
    p.add_argument("--run_dir", help="where --config runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to fit")
    args = p.parse_args()
    if args.config:
        if not args.run_dir:
            p.error("--config needs --run_dir")
        walls = run_stages(args.config, Path(args.run_dir), args.set)
        print(table(Path(args.run_dir), walls))
    elif args.run:
        print(table(Path(args.run)))
    else:
        p.error("give a run directory or --config with --run_dir")


if __name__ == "__main__":
    main()
