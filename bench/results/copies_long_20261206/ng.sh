#!/usr/bin/env bash
# 20 Newsgroups N=256, 800 train, relative 6x: CMD NAME [flags]; THREADS=n (default 1)
set -u
CMD=$1; NAME=$2; shift 2
export OMP_NUM_THREADS=${THREADS:-1} PYTHONPATH=/work/wt_a TOKENIZERS_PARALLELISM=false
cd /work/runs
python -m power_bert_cli $CMD --task 20newsgroups --max-length 256 --max-train-examples 800 --max-eval-examples 500 \
  --search-epochs 1 --lr-bert 8e-5 --batch-size 16 --attention-dropout 0 --target-speedup 6 --seed 42 \
  --output-dir /work/runs/$NAME "$@" > /work/runs/$NAME.$CMD.log 2>&1
echo "$CMD rc $?" >> /work/runs/$NAME.$CMD.log
