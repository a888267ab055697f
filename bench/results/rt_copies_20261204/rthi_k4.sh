cd /work/runs
run() { t=$1; OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain --task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup $t --batch-size 32 --attention-dropout 0 --seed 42 --output-dir rt${t}_k4 --no-progress --augment-copies 4 > rt${t}_k4.log 2>&1; echo rc=$? >> rt${t}_k4.log; }
run 4.5 & run 6 & wait
