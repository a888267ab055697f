# issue 21: the short-text floor (--min-rows 3 --min-rows-max-length 8) at 6x on the main job's 3,000-sentence
# subset, seed $1 (default 42) at target $2 (default 6), over that seed's stage 1 (ak2_s<seed>; new search + stage 3, defaults otherwise);
# code: the worktree /work/wt_l8 at commit 1a4c988
cd /work/runs
S="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress"
sub() { s=$1; t=$2; d=sl8_${t}_s$s; mkdir -p $d && cp -r ak2_s$s/finetune ak2_s$s/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_l8 python -m power_bert_cli run $S --seed $s --target-speedup $t --min-rows 3 --min-rows-max-length 8 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
sub ${1:-42} ${2:-6}
