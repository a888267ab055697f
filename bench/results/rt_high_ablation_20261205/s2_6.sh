# seed 2, relative 6x on the subset: defaults against 4 copies with drop 0.3, one shared stage 1 + search
cd /work/runs
A="--task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup 6 --batch-size 32 --attention-dropout 0 --seed 2 --no-progress"
mkdir -p s2_6_def && cp -r ak2_s2/finetune ak2_s2/run_config.json s2_6_def/
OMP_NUM_THREADS=2 PYTHONPATH=/work/main python -m power_bert_cli search $A --output-dir s2_6_def > s2_6_search.log 2>&1; echo rc=$? >> s2_6_search.log
mkdir -p s2_6_k4d30 && cp -r s2_6_def/finetune s2_6_def/search s2_6_def/run_config.json s2_6_k4d30/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $A --output-dir s2_6_def > s2_6_def.log 2>&1 &
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli run $A --output-dir s2_6_k4d30 --augment-copies 4 --augment-drop 0.3 > s2_6_k4d30.log 2>&1 &
wait
