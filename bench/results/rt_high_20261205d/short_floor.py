"""Inference-only probe (issue 21): models searched and retrained with a floor of 1 row, scored
with a floor of 3 rows for texts of at most L0 tokens only (1 for longer ones), and the FLOP bound
of that rule on the test lengths. Usage: python short_floor.py L0 RUN [RUN...] (run folders under
RUNS, default /work/runs); one-word.csv and two-word.csv beside this script."""
import os
import csv, sys, torch, numpy as np
from transformers import AutoTokenizer
from power_bert_ops.modeling import encoder as E
from power_bert_ops.flops import FlopModel
from power_bert_ops.training.artifacts import load_model
from power_bert_ops import data as D

L0 = int(sys.argv[1]); M = 3
RUNS = os.environ.get("RUNS", "/work/runs")
HERE = os.path.dirname(os.path.abspath(__file__))
orig = E.relative_rows
def short_floor(retention_j, lengths, n_cfg, min_rows=1):
    return torch.where(lengths <= L0, orig(retention_j, lengths, n_cfg, M), orig(retention_j, lengths, n_cfg, 1))
E.relative_rows = short_floor

def acc(model, tok, texts, labels):
    enc = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = []
        for i in range(0, len(texts), 64):
            out.append(model(**{k: v[i:i+64] for k, v in enc.items()}).logits.argmax(-1))
    return float((torch.cat(out).numpy() == np.array(labels)).mean())

test = D.load_task("rotten_tomatoes", "test")
one = list(csv.DictReader(open(os.path.join(HERE, "one_word_reviews.csv"))))
two = list(csv.DictReader(open(os.path.join(HERE, "two_word_reviews.csv"))))
for name in sys.argv[2:]:
    model, tok = load_model(f"{RUNS}/{name}/retrain/model")
    model.config.min_rows = M  # the batch width allows the short texts' floor; relative_rows gives each row its own
    names = [model.config.id2label[i] for i in range(2)]
    a_test = acc(model, tok, test.texts, test.labels)
    a_one = acc(model, tok, [r["text"] for r in one], [names.index(r["label"]) for r in one])
    a_two = acc(model, tok, [r["text"] for r in two], [names.index(r["label"]) for r in two])
    lengths = [len(x) for x in tok(test.texts, truncation=True, max_length=64)["input_ids"]]
    ell = list(model.retention)
    short = [n for n in lengths if n <= L0]; long = [n for n in lengths if n > L0]
    f3, f1 = FlopModel(model.config, 64, lengths=short or [1], scale="relative", min_rows=3), FlopModel(model.config, 64, lengths=long, scale="relative", min_rows=1)
    bound = (f3.dense_macs() + f1.dense_macs()) / (f3.macs(ell) + f1.macs(ell)) if short else f1.bound(ell)
    b1 = FlopModel(model.config, 64, lengths=lengths, scale="relative", min_rows=1).bound(ell)
    b3 = FlopModel(model.config, 64, lengths=lengths, scale="relative", min_rows=3).bound(ell)
    print(f"{name}: L0={L0} test {a_test:.4f} one-word {a_one:.2f} two-word {a_two:.2f} bound {bound:.2f}x (floor 1 everywhere {b1:.2f}x, floor 3 everywhere {b3:.2f}x); {len(short)} of {len(lengths)} test texts <= L0")
