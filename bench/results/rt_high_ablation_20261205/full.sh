# full training split, relative 4.5x and 6x, defaults; shared stage 1 (2 threads), then both targets (1 thread each)
cd /work/runs
A="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
OMP_NUM_THREADS=2 PYTHONPATH=/work/main python -m power_bert_cli finetune $A --output-dir full_4.5 > full_ft.log 2>&1; echo rc=$? >> full_ft.log
mkdir -p full_6 && cp -r full_4.5/finetune full_4.5/run_config.json full_6/
go() { t=$1; OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $A --target-speedup $t --output-dir full_$t > full_$t.log 2>&1; echo rc=$? >> full_$t.log; }
go 4.5 & go 6 & wait
