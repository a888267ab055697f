cd /work/runs
run() { s=$1; OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain --task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup 3 --batch-size 32 --attention-dropout 0 --seed $s --output-dir ${PFX}_s$s --no-progress --augment-copies $K > ${PFX}_s$s.log 2>&1; echo rc=$? >> ${PFX}_s$s.log; }
export K=1 PFX=ak1
run 42 & run 1 & wait
run 2 &
export K=2 PFX=ak2
run 42; wait
run 1 & run 2 & wait
