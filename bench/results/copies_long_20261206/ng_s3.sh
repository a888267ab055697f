#!/usr/bin/env bash
# stage 3 on a copy of ng6's stages 1-2: NAME [flags]; then evaluate on 2,000 test documents
set -u
NAME=$1; shift
cd /work/runs
mkdir -p $NAME && cp -r ng6/finetune ng6/search $NAME/ && cp ng6/*.json $NAME/ 2>/dev/null
./ng.sh retrain $NAME "$@"
export OMP_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/wt_a TOKENIZERS_PARALLELISM=false
python -m power_bert_cli evaluate --model-dir /work/runs/$NAME/retrain/model --task 20newsgroups --max-length 256 \
  --eval-split test --max-eval-examples 2000 > /work/runs/$NAME.eval2000.log 2>&1
