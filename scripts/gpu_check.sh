#!/usr/bin/env bash
# The GPU half in one prepared command. From the repository root on the GPU machine:
#
#   bash scripts/gpu_check.sh OUTDIR              # build with CUDA, CUDA/Triton tests, GPU benchmarks,
#                                                 # a bf16 end-to-end job, the break-even; <= 8 min
#   bash scripts/gpu_check.sh --dry-run OUTDIR    # any CPU machine (CI): checks what that would run
#
# Fill the git-ignored .gpu_carry/ first, here: bash scripts/fetch_gpu_carry.sh. Steps, budget,
# options and outputs: scripts/gpu_check.py's docstring and bench/RESULTS.md ("Running the GPU
# check"). PYTHON picks the interpreter (default python3: on the GPU image, the one with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
