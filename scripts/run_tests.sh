#!/usr/bin/env bash
# The test command (README): installs what a fresh machine lacks, builds the kernels, runs
# the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRA="pytest pytest-benchmark pytest-xdist expecttest onnx onnxscript onnxruntime"  # onnx*: the export extra, tested
command -v cmake >/dev/null || EXTRA="$EXTRA cmake"  # the libtorch build test (PyPI's cmake where none is installed)
POWER_BERT_EXTRA_PACKAGES="$EXTRA" bash scripts/install.sh

# Two workers (one per core of the CI machine), one thread each (a test that needs more sets it);
# which tests share a worker: python_tests/conftest.py. No test here uses pytest-benchmark's
# fixture (the benchmark suites run in their own process), so its plugin is left out.
set +e
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m pytest python_tests -q -n "${POWER_BERT_TEST_WORKERS:-2}" --dist loadgroup \
  -p no:benchmark "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
