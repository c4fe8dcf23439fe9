#!/usr/bin/env bash
# The whole GPU table in one command (designed for < 9 minutes on one H100):
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# For 768x768 and 512x512 (full-size architecture, random fp16 weights, no downloads; one 48-frame window,
# overlap 4, cfg 3.5, DDIM, 3 steps, the first a warm-up), every configuration in its own process:
# the original algorithm's costs, the fastest configuration, and what auto picks with 6 GB and 4 GB free.
# torch.cuda.max_memory_allocated / max_memory_reserved and the time per window-step go next to the
# fake-tensor meter's peak and the planner's prediction for the same configuration.
# Writes OUT_DIR/{results.jsonl, table-768.md, table-512.md, meter-*.json, env.txt, summary.md};
# paste summary.md into benchmarks/RESULTS.md.
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

COMMON=(--device cuda --precision fp16 --frames 48 --context-frames 48 --context-overlap 4 --cfg 3.5 --steps 3
        --timeout 150 --json "$OUT/results.jsonl")
"$PY" benchmarks/bench.py "${COMMON[@]}" --width 768 --height 768 \
  --configs original,fastest,auto:6@768,auto:4@768 --markdown "$OUT/table-768.md" || true
"$PY" benchmarks/bench.py "${COMMON[@]}" --width 512 --height 512 \
  --configs original,fastest,auto:4@512 --markdown "$OUT/table-512.md" || true
for size in 768 512; do
  for free in 80 6 4; do
    "$PY" benchmarks/vram_meter.py --width $size --height $size --free-gb $free --json > "$OUT/meter-$size-$free.json" || true
  done
  "$PY" benchmarks/vram_meter.py --width $size --height $size --original --json > "$OUT/meter-$size-original.json" || true
done

{
  echo "## GPU run $(sed -n 's/^date: //p' "$OUT/env.txt")"
  echo
  echo '```'; cat "$OUT/env.txt"; echo '```'
  echo
  echo "Settings: full-size architecture, random fp16 weights, 48-frame window (overlap 4), cfg 3.5, DDIM, 3 steps (first = warm-up), every configuration in its own process; peaks are torch.cuda max_memory_allocated / max_memory_reserved over sampling + decode."
  echo
  echo "### 768x768x48"; cat "$OUT/table-768.md" 2>/dev/null || echo "(missing)"
  echo
  echo "### 512x512x48"; cat "$OUT/table-512.md" 2>/dev/null || echo "(missing)"
  echo
  echo "### Meter (fake tensors) for the same runs, GB allocated"
  for f in "$OUT"/meter-*.json; do
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"- {sys.argv[1].split('meter-')[-1][:-5]}: meter {d['peak']/1e9:.2f}, planner {d['planner_peak']/1e9:.2f} ({d['config']})\")" "$f" || true
  done
  echo
  echo "Wall time of this script: $(( $(date +%s) - START )) s"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
