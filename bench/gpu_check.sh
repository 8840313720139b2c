#!/usr/bin/env bash
# The GPU check: tests + benchmark on an H100/H200, results in $OUT (gpu.json, gpu_table.md, log.txt, summary.txt).
# Usage (repository root): OUT=/some/dir bash bench/gpu_check.sh     (needs torch with CUDA, Triton and transformers)
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/gpu_out} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/log.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/log.txt"
python3 bench/gpu_check.py 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
python3 bench/gpu_summary.py "$OUT/gpu.json" | tee "$OUT/summary.txt"      # the README's table and the targets
exit "$rc"
