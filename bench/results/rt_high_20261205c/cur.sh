# full split: (a) 4.5x stage 3 with 4 copies/drop 0.3 and a 6-epoch cap; (b) 6x stage 3 started from the 4.5x 4c/0.3 stage-3 model (curriculum)
cd /work/runs
A="--task rotten_tomatoes --max-length 64 --max-train-examples 0 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --seed 42 --no-progress"
a() { d=fk4e6_4.5; mkdir -p $d && cp -r full_4.5/finetune full_4.5/search full_4.5/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain $A --target-speedup 4.5 --output-dir $d --retrain-epochs 6 > $d.log 2>&1; echo rc=$? >> $d.log; }
b() { d=cur_6;  # prepared: finetune + search of full_6, search/model = fk4d30_4.5/retrain/model
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain $A --target-speedup 6 --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log; }
a & b & wait
