# main job (subset, relative 3x): stage 3 with the new copies (4, drop 0.3) and a 6-epoch cap, on copies of ak2_s${S}'s stage 1 + search
cd /work/runs
run() { s=$1; d=m3e6_s$s; mkdir -p $d && cp -r ak2_s$s/finetune ak2_s$s/search ak2_s$s/run_config.json $d/
  OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain --task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup 3 --batch-size 32 --attention-dropout 0 --seed $s --output-dir $d --no-progress --retrain-epochs 6 > $d.log 2>&1; echo rc=$? >> $d.log; }
run ${1:-42}
