# full split, relative 6x with a floor of 1 row (--min-rows 1): new search + stage 3 over full_6's stage 1
cd /work/runs
A="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
d=f1_6; mkdir -p $d && cp -r full_6/finetune full_6/run_config.json $d/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $A --target-speedup 6 --min-rows 1 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log
