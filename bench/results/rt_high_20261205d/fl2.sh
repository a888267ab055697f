# issue 21: floor of 1 row on the subset at 4.5x (seed 42, over k4d30_4.5's stage 1); starts when se6_4.5_s42 ends.
# The second run (6x, seed 1) was stopped before it began: the one-word reviews had settled the question.
cd /work/runs
while ! grep -q "^rc=" se6_4.5_s42.log 2>/dev/null; do sleep 30; done
S="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress --min-rows 1 --retrain-epochs 4"
d=sf1_4.5_s42; mkdir -p $d && cp -r k4d30_4.5/finetune k4d30_4.5/run_config.json $d/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $S --seed 42 --target-speedup 4.5 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log
d=sf1_6_s1; mkdir -p $d && cp -r ak2_s1/finetune ak2_s1/run_config.json $d/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $S --seed 1 --target-speedup 6 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log
