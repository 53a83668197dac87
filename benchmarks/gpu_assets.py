"""Fill ``.gpu_assets/`` with what ``gpu_check.sh`` needs on a bare GPU machine that gets only the working tree.

SmolLM2's weights (GGUF package 98 MB, converted folder 0.5 GB) exceed what may travel, so the GPU run
uses ``smollm2-shape``: SmolLM2-135M-Instruct's config with random weights and its real tokenizer. This
copies the converted folder without its weights, laid out as a ``GREAM_LIT_CACHE`` (``models/<alias>/``),
and the Scientific data with one index, laid out as under ``../shared/data``. Research data: the folder
is kept out of git through ``.git/info/exclude``, so it travels only as a carried path.

    PYTHONPATH=. python benchmarks/gpu_assets.py   # then: GREAM_GPU_ASSETS=.gpu_assets benchmarks/gpu_check.sh
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from gream_lit.modeling.backbone import DEFAULT_BACKBONE, resolve

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".gpu_assets"
DATA = ROOT.parent / "shared/data/amazon18_scientific"
INDEX = "indexes/rkmeans_zcr/Scientific.index.json"
DATA_FILES = ("Scientific.inter.json", "Scientific.item.json", INDEX)
WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")
MAX_MIB = 20


def exclude_from_git() -> None:
    """Append ``/.gpu_assets/`` to ``.git/info/exclude`` unless git already ignores it (no tracked file changes)."""
    if subprocess.run(["git", "check-ignore", "-q", OUT.name], cwd=ROOT).returncode == 0:
        return
    git_path = subprocess.check_output(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, text=True)
    exclude = ROOT / git_path.strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"/{OUT.name}/\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if OUT.exists():
        shutil.rmtree(OUT)
    backbone = Path(resolve(DEFAULT_BACKBONE))
    model_dir = OUT / "models" / backbone.name
    model_dir.mkdir(parents=True)
    for f in backbone.iterdir():
        if f.is_file() and f.suffix not in WEIGHTS:
            shutil.copy2(f, model_dir / f.name)
    data_dir = OUT / args.data.name
    for name in DATA_FILES:
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(args.data / name, data_dir / name)
    exclude_from_git()
    files = sorted(f for f in OUT.rglob("*") if f.is_file())
    total = sum(f.stat().st_size for f in files) / 2**20
    for f in files:
        print(f"{f.stat().st_size / 2**20:8.2f} MiB  {f.relative_to(ROOT)}")
    print(f"{total:8.2f} MiB  {OUT.relative_to(ROOT)}")
    if total >= MAX_MIB:
        raise SystemExit(f"{OUT}: {total:.1f} MiB, over the {MAX_MIB} MiB meant for it")


if __name__ == "__main__":
    main()
