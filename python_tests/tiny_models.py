"""Tiny, fast checkpoints and a learnable synthetic text task for pipeline tests."""
from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

WORDS = ["good", "bad", "movie", "plot", "actor", "scene", "story", "film", "music", "ending", "great", "awful",
         "funny", "boring", "long", "short", "the", "a", "was", "is", "and", "very", "not", "quite"]


def tiny_bert_checkpoint(path: Path, layers: int = 2, dropout: float = 0.0, num_labels: int = 2) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordPiece tokenizer over WORDS, saved as a plain
    Hugging Face checkpoint directory."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes `vocab` (a dict or a path); `vocab_file` is ignored there.
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(path)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, num_labels=num_labels)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def synthetic_csv(path: Path, n: int, seed: int, string_labels: bool = True) -> Path:
    """Sentences of 3-18 words; the label is whether 'good' or 'great' occurs (learnable)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 18))]  # some exceed N=16 tokens
        positive = rng.random() < 0.5
        words = [w for w in words if w not in ("good", "great")]
        if positive:
            words.insert(rng.randrange(len(words) + 1), rng.choice(["good", "great"]))
        label = ("pos" if positive else "neg") if string_labels else int(positive)
        rows.append({"review": " ".join(words), "sentiment": label})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["review", "sentiment"])
        w.writeheader()
        w.writerows(rows)
    return path


def synthetic_race(root: Path, per_split: dict[str, int], seed: int) -> Path:
    """A folder in RACE's layout ({split}/{high,middle}/N.txt JSON files) with a learnable task:
    the article contains exactly one of the four options, which is the answer."""
    import json

    rng = random.Random(seed)
    for split, n in per_split.items():
        for i in range(n):
            level = "high" if i % 2 else "middle"
            d = root / split / level
            d.mkdir(parents=True, exist_ok=True)
            options = rng.sample(WORDS[:12], 4)
            answer = rng.randrange(4)
            filler = [w for w in WORDS[12:] if w not in options]
            article = [rng.choice(filler) for _ in range(rng.randint(4, 10))]
            article.insert(rng.randrange(len(article) + 1), options[answer])
            obj = {"id": f"{level}{i}.txt", "article": " ".join(article), "questions": ["which word is there ?"],
                   "options": [options], "answers": ["ABCD"[answer]]}
            (d / f"{i}.txt").write_text(json.dumps(obj), encoding="utf-8")
    return root


def run_args(root, out, *extra):
    """`power-bert run` on the tiny model and synthetic CSVs of the `workdir` fixture (conftest)."""
    return ["run", "--model", str(root / "model"), "--train-file", str(root / "train.csv"),
            "--eval-file", str(root / "eval.csv"), "--text-column", "review", "--label-column", "sentiment",
            "--max-length", "16", "--output-dir", str(out), "--batch-size", "32", "--eval-batch-size", "64",
            "--finetune-epochs", "8", "--search-epochs", "2", "--retrain-epochs", "2", "--lr-bert", "3e-3",
            "--lr-soft", "5e-2", "--lambda", "2e-3", "--no-progress", *extra]


def retrain_args(finished_run, root, out, *extra):
    """`power-bert retrain` arguments (run_args plus ``extra``) over a copy, in ``out``, of a finished
    run's stages 1-2 (its stage 3 removed)."""
    shutil.copytree(finished_run, out)
    shutil.rmtree(out / "retrain")
    args = run_args(root, out, *extra)
    args[0] = "retrain"
    return args


def one_and_two_processes(args, out_flag: str, one, two, port: int):
    """Runs ``power-bert <args>`` in one process and under torchrun with 2 CPU processes (gloo),
    writing to ``one`` / ``two`` through ``out_flag``; asserts both succeed; returns both results."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = []
    for launcher, out in (([], one), (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                       str(port)], two)):
        r = subprocess.run([sys.executable, *launcher, "-m", "power_bert_ops.cli", *args, out_flag, str(out)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(r)
    return runs
