# issue 21: each run's stage-3 model on the one-word and two-word reviews (power-bert evaluate); usage: short_texts.sh RUN...
H=/work/main/bench/results
for d in "$@"; do
  for f in $H/rt_high_20261205d/one_word_reviews.csv $H/rt_high_20261205d/two_word_reviews.csv; do
    echo "$d $(basename $f): $(OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_l8 python -m power_bert_cli evaluate --model-dir /work/runs/$d/retrain/model --eval-file $f --no-progress 2>&1 | tail -n 1)"
  done
done
