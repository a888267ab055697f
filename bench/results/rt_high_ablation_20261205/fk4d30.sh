# full training split, relative 4.5x / 6x: stage 3 with 4 copies, drop 0.3, on copies of full_${T}'s stage 1 + search
cd /work/runs
A="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
go() { t=$1; d=fk4d30_$t; mkdir -p $d && cp -r full_$t/finetune full_$t/search full_$t/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain $A --target-speedup $t --output-dir $d --augment-copies 4 --augment-drop 0.3 > $d.log 2>&1; echo rc=$? >> $d.log; }
go 4.5 & go 6 & wait
