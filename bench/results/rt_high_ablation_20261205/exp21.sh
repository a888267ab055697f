# usage: bash exp21.sh NAME TARGET [extra retrain flags...]  (stage 1 + search copied from rt${TARGET}_aug)
cd /work/runs
name=$1; t=$2; shift 2
mkdir -p $name && cp -r rt${t}_aug/finetune rt${t}_aug/search rt${t}_aug/run_config.json $name/
OMP_NUM_THREADS=1 PYTHONPATH=/work/main python -m power_bert_cli retrain --task rotten_tomatoes --max-length 64 --max-train-examples 3000 --finetune-epochs 2 --search-epochs 1 --lr-bert 5e-5 --target-speedup $t --batch-size 32 --attention-dropout 0 --seed 42 --output-dir $name --no-progress "$@" > $name.log 2>&1
echo rc=$? >> $name.log
