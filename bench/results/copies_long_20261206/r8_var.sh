#!/usr/bin/env bash
# Stage 3 again on a copy of an R8 run's stages 1-2: SRC NAME NTRAIN [flags]; THREADS=n (default 1)
set -u
SRC=$1; NAME=$2; NTRAIN=$3; shift 3
export OMP_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/wt_a TOKENIZERS_PARALLELISM=false
cd /work/runs
mkdir -p $NAME && cp -r $SRC/finetune $SRC/search $NAME/ && cp $SRC/*.json $NAME/ 2>/dev/null
python -m power_bert_cli retrain --task r8 --max-length 256 --max-train-examples $NTRAIN --max-eval-examples 0 \
  --search-epochs 1 --lr-bert 5e-5 --batch-size 16 --attention-dropout 0 --target-speedup 6 \
  --seed 42 --output-dir /work/runs/$NAME "$@" > /work/runs/$NAME.log 2>&1
echo "retrain rc $?" >> /work/runs/$NAME.log
python -m power_bert_cli evaluate --model-dir /work/runs/$NAME/retrain/model --task r8 --eval-split test \
    --max-eval-examples 0 > /work/runs/$NAME.eval_retrain.log 2>&1
