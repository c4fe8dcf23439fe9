#!/usr/bin/env bash
# The whole GPU table in one command (designed for < 9 minutes on one H100):
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# Runs the full-size architecture (random fp16 weights, no downloads) at 768x768 and 512x512, one
# 48-frame window (overlap 4), cfg 3.5, DDIM, 3 steps (the first is warm-up), every mode in its own
# process, then the FLOP-floor report. Writes OUT_DIR/{results.jsonl, table-768.md, table-512.md,
# floor.md, env.txt, summary.md}; paste summary.md into benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M)}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY="${PYTHON:-.venv/bin/python}"
START=$(date +%s)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
} | tee "$OUT/env.txt"

COMMON=(--device cuda --dtype fp16 --frames 48 --context-frames 48 --context-overlap 4 --cfg 3.5 --steps 3
        --timeout 150 --json "$OUT/results.jsonl")
"$PY" benchmarks/bench.py "${COMMON[@]}" --width 768 --height 768 \
  --modes original,fast,sequential-cfg,model-offload,default,lowvram,lowvram-fp8 --stream-budget-gb 0.6 \
  --markdown "$OUT/table-768.md" || true
"$PY" benchmarks/bench.py "${COMMON[@]}" --width 512 --height 512 \
  --modes original,fast,default,lowvram --markdown "$OUT/table-512.md" || true
"$PY" benchmarks/flop_floor.py --sizes 768,512 --frames 48 --results "$OUT/results.jsonl" --out "$OUT/floor.md" || true
"$PY" -m musepose.perf.cli --width 768 --height 768 --context-frames 48 --dtype fp16 --cfg 3.5 \
  --device-memory-gb 6 > "$OUT/plan-768.txt" || true
"$PY" -m musepose.perf.cli --width 512 --height 512 --context-frames 48 --dtype fp16 --cfg 3.5 \
  --device-memory-gb 4 > "$OUT/plan-512.txt" || true

{
  echo "## GPU run $(sed -n 's/^date: //p' "$OUT/env.txt")"
  echo
  echo '```'; cat "$OUT/env.txt"; echo '```'
  echo
  echo "Settings: full-size architecture, random fp16 weights, 48-frame window (overlap 4), cfg 3.5, DDIM, 3 steps (first = warm-up), every mode in its own process; peaks are torch.cuda max_memory_allocated / max_memory_reserved over sampling + decode."
  echo
  echo "### 768x768x48"; cat "$OUT/table-768.md" 2>/dev/null || echo "(missing)"
  echo
  echo "### 512x512x48"; cat "$OUT/table-512.md" 2>/dev/null || echo "(missing)"
  echo
  echo "### FLOP floor"; cat "$OUT/floor.md" 2>/dev/null || echo "(missing)"
  echo
  echo "Wall time of this script: $(( $(date +%s) - START )) s"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
