# issue 21: a 6-epoch stage 3 at 4.5x on the subset, over k4d30_4.5's search (seed 42); starts when f1_4.5 ends
cd /work/runs
while ! grep -q "^rc=" f1_4.5.log 2>/dev/null; do sleep 30; done
A="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress --target-speedup 4.5 --retrain-epochs 6"
d=se6_4.5_s42; mkdir -p $d && cp -r k4d30_4.5/finetune k4d30_4.5/search k4d30_4.5/run_config.json $d/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain $A --seed 42 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log
