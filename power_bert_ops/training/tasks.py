"""From the data layer (power_bert_ops.data) to a :class:`PreparedTask` for the pipeline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import data as D
from .pipeline import PreparedTask


@dataclass
class DataArgs:
    task: str | None = None  # a task name (GLUE, race, rotten_tomatoes, 20newsgroups, r8) or "hf:<path>"
    data_dir: str | None = None
    train_file: str | None = None
    eval_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    regression: bool = False
    eval_split: str = "dev"
    max_train_examples: int | None = None  # a fixed, seeded subset (quick runs on small machines)
    max_eval_examples: int | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        if self.train_file or self.eval_file:
            return self.task or "files"
        return self.task or "rotten_tomatoes"


def load_raw(args: DataArgs, label_names=None) -> dict:
    """{"train", "eval", "test"?} datasets (TextDataset / MultipleChoiceDataset)."""
    if args.train_file or args.eval_file or args.test_file:
        if args.train_file is None and label_names is None:
            raise D.DataError("--eval-file without --train-file needs the model's saved label mapping")
        return D.load_files(args.train_file, args.eval_file, args.text_column, args.label_column,
                            args.text_pair_column, args.test_file, is_regression=args.regression,
                            label_names=label_names, task=args.task)
    name = args.name
    out = {"train": D.load_task(name, "train", data_dir=args.data_dir),
           "eval": D.load_task(name, args.eval_split, data_dir=args.data_dir)}
    try:
        test = D.load_task(name, "test", data_dir=args.data_dir)
        if test.has_labels:
            out["test"] = test
    except (D.DataError, FileNotFoundError, KeyError, ValueError):
        pass
    return out


def _subset(ds, n, seed):
    if n is None or n >= len(ds):
        return ds
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.select(sorted(idx.tolist()))


def prepare(args: DataArgs, tokenizer, max_length: int) -> PreparedTask:
    raw = load_raw(args)
    train = _subset(raw["train"], args.max_train_examples, args.seed)
    ev = _subset(raw["eval"], args.max_eval_examples, args.seed)
    test = raw.get("test")
    if test is not None:
        test = _subset(test, args.max_eval_examples, args.seed)
    # Training batches are padded to their longest row (dynamic padding: the model keeps
    # min(ℓ_j, rows) per layer); eval / test stay at the fixed N the speed-up is defined at.
    dynamic = train.problem != "multiple_choice"
    toks = {k: D.tokenize_dataset(v, tokenizer, max_length, padding=False if k == "train" and dynamic else "max_length")
            for k, v in (("train", train), ("eval", ev), ("test", test)) if v is not None}
    problem = train.problem
    kind = args.name if D.canonical_name(args.name) else problem
    labels = getattr(train, "label_names", None)
    return PreparedTask(
        name=args.name,
        problem=problem,
        num_labels=1 if problem == "regression" else (train.num_choices if problem == "multiple_choice" else len(labels)),
        label_names=list(labels) if labels and problem != "multiple_choice" else None,
        train=toks["train"], eval=toks["eval"], test=toks.get("test"), max_length=max_length,
        compute_metrics=lambda p, y: D.compute_metrics(kind, p, y),
        primary_metric=D.primary_metric(kind),
        truncated={k: int(v.num_truncated) for k, v in toks.items()},
        collator=_collator(tokenizer, problem),
    )


def _collator(tokenizer, problem: str):
    from transformers import DataCollatorWithPadding

    if problem == "multiple_choice":
        return None  # [C, N] features are padded to N when tokenised
    return DataCollatorWithPadding(tokenizer)
