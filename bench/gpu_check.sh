#!/usr/bin/env bash
# The GPU check: tests + benchmark on an H100/H200, results in $OUT (gpu.json, gpu_table.md, log.txt).
# Usage (repository root): OUT=/some/dir bash bench/gpu_check.sh     (needs torch with CUDA and transformers)
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/gpu_out} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/log.txt"
python3 bench/gpu_check.py 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
