# issue 21: the short-text floor (--min-rows 3 --min-rows-max-length 8) on the full Rotten Tomatoes split at
# 4.5x and 6x, each over the shared stage 1 of fk4d30_* (new search + stage 3, defaults otherwise);
# code: the worktree /work/wt_l8 at commit 1a4c988
cd /work/runs
F="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
full() { t=$1; d=l8_$t; mkdir -p $d && cp -r fk4d30_$t/finetune fk4d30_$t/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_l8 python -m power_bert_cli run $F --target-speedup $t --min-rows 3 --min-rows-max-length 8 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
full 4.5 &
full 6 &
wait
