#!/usr/bin/env bash
# Installs what a fresh machine lacks and builds the kernels. Keeps an installed torch (GPU
# machines); otherwise takes the pinned CPU build (an unpinned `torch` would pull a multi-GB
# CUDA build). Used by run_tests.sh and run_main_job.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==${POWER_BERT_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q numpy ninja "transformers>=5.17" "accelerate>=1.1" safetensors tqdm scikit-learn scipy \
  matplotlib ${POWER_BERT_EXTRA_PACKAGES:-}
"$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install -q triton
# Built against that torch: no build isolation, no dependency resolution that could replace it.
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
