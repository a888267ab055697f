# issue 21, floor of 1 row (--min-rows 1) on more points, each over an existing stage 1 (new search + stage 3, defaults otherwise)
cd /work/runs
S="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress"
F="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
sub() { s=$1; d=sf1_6_s$s; mkdir -p $d && cp -r ak2_s$s/finetune ak2_s$s/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $S --seed $s --target-speedup 6 --min-rows 1 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
full45() { d=f1_4.5; mkdir -p $d && cp -r fk4d30_4.5/finetune fk4d30_4.5/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $F --target-speedup 4.5 --min-rows 1 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
(sub 42; sub 2) &
full45 &
wait
