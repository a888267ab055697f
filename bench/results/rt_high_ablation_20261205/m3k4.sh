# main job (subset, relative 3x): stage 3 with 4 copies, drop 0.3, on copies of ak2_s${S}'s stage 1 + search (3 seeds)
cd /work/runs
run() { s=$1; d=m3k4_s$s; mkdir -p $d && cp -r ak2_s$s/finetune ak2_s$s/search ak2_s$s/run_config.json $d/
  OMP_NUM_THREADS=${T:-1} PYTHONPATH=/work/main python -m power_bert_cli retrain --task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup 3 --batch-size 32 --attention-dropout 0 --seed $s --output-dir $d --no-progress --augment-copies 4 --augment-drop 0.3 > $d.log 2>&1; echo rc=$? >> $d.log; }
run 42 & run 1 & wait
T=2 run 2
