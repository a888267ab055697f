#!/usr/bin/env bash
# R8, N = 256, relative 6x, defaults; NAME TRAIN_EXAMPLES; whole dev and test splits.
set -u
NAME=$1; NTRAIN=$2; shift 2
export OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_a TOKENIZERS_PARALLELISM=false
cd /work/runs
python -m power_bert_cli run --task r8 --max-length 256 --max-train-examples $NTRAIN --max-eval-examples 0 \
  --search-epochs 1 --lr-bert 5e-5 --batch-size 16 --attention-dropout 0 --target-speedup 6 \
  --seed 42 --output-dir /work/runs/$NAME "$@" > /work/runs/$NAME.log 2>&1
echo "run rc $?" >> /work/runs/$NAME.log
for m in finetune retrain; do
  python -m power_bert_cli evaluate --model-dir /work/runs/$NAME/$m/model --task r8 --eval-split test \
    --max-eval-examples 0 > /work/runs/$NAME.eval_$m.log 2>&1
done
