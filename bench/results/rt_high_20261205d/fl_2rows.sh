# issue 21: a floor of 2 rows (--min-rows 2) at 6x on the subset, seeds 42 and 2 over ak2's stage 1 (new search + stage 3, cap 4)
cd /work/runs
S="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress --min-rows 2 --retrain-epochs 4 --target-speedup 6"
one() { s=$1; d=sf2_6_s$s; mkdir -p $d && cp -r ak2_s$s/finetune ak2_s$s/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $S --seed $s --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
one 42 & one 2 & wait
