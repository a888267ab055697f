#!/usr/bin/env bash
# The test command (README): installs what a fresh machine lacks, builds the kernels, runs
# the test suite. Works on a bare CPU machine (Python 3.10+) and on a GPU machine whose torch
# is already installed (it is kept as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: keep an installed one; otherwise the pinned CPU build (an unpinned `torch` would
# pull a multi-GB CUDA build).
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==${POWER_BERT_TORCH_VERSION:-2.13.0}"
fi
# Test tools, then the package itself built against that torch (no build isolation, no
# dependency resolution that could replace torch).
"$PY" -m pip install -q numpy pytest pytest-benchmark expecttest ninja
"$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install -q triton
"$PY" -m pip install -q --no-build-isolation --no-deps -e .

set +e
"$PY" -m pytest python_tests -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
