# issue 21: a 6-epoch stage 3 (--retrain-epochs 6) at 6x on the subset, over the searches of k4d30_6 (seed 42), s1_6_k4d30, s2_6_k4d30
cd /work/runs
while ! grep -q "^rc=" sf1_6_s2.log 2>/dev/null; do sleep 30; done
A="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --batch-size 32 --attention-dropout 0 --no-progress --target-speedup 6 --retrain-epochs 6"
for pair in "42 k4d30_6" "2 s2_6_k4d30" "1 s1_6_k4d30"; do set -- $pair; s=$1; src=$2; d=se6_6_s$s
  mkdir -p $d && cp -r $src/finetune $src/search $src/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain $A --seed $s --output-dir $d > $d.log 2>&1; echo rc=$? >> $d.log
done
