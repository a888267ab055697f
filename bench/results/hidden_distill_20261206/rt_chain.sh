#!/usr/bin/env bash
# Rotten Tomatoes, the main job's subset and stage 1 (main_fresh), relative TARGET: the defaults,
# then stage 3 again with --distill-hidden 1 on a copy of stages 1-2; test accuracy of each.
set -u
X=$1
export OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_a TOKENIZERS_PARALLELISM=false
cd /work/runs
ARGS="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 \
 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --target-speedup $X"
N=rt_$X
rm -rf $N && mkdir -p $N && cp -r main_fresh/finetune $N/ && cp main_fresh/run_config.json $N/
python -m power_bert_cli run $ARGS --output-dir /work/runs/$N > $N.log 2>&1
echo "run rc $?" >> $N.log
H=rt_${X}_hidden
rm -rf $H && mkdir -p $H && cp -r $N/finetune $N/search $H/ && cp $N/run_config.json $H/
python -m power_bert_cli retrain $ARGS --output-dir /work/runs/$H --distill-hidden 1 > $H.log 2>&1
echo "retrain rc $?" >> $H.log
for m in $N/finetune $N/retrain $H/retrain; do
  python -m power_bert_cli evaluate --model-dir /work/runs/$m/model --task rotten_tomatoes --eval-split test \
    --max-eval-examples 0 > /work/runs/$(echo $m | tr / _).eval_test.log 2>&1
done
