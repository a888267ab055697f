"""From the data layer (:mod:`power_bert_ops.data`) to a :class:`PreparedTask` for the pipeline:
which data (:class:`DataArgs`), read, subset, checked and tokenised at N."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification, DataCollatorWithPadding

from .. import data as D
from ..modeling import PowerBertForMultipleChoice, PowerBertForSequenceClassification

__all__ = ["DataArgs", "PreparedTask", "load_raw", "prepare", "subset"]


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
    max_train_examples: int | None = None  # a fixed, seeded subset (quick runs on small machines); 0 or None: all
    max_eval_examples: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                flag = "--" + name.replace("_", "-")
                raise D.DataError(f"{flag} must be a whole number >= 0 (0 means all the data), got {value!r}")
        check_distinct_columns(**{"--text-column": self.text_column, "--text-pair-column": self.text_pair_column,
                                  "--label-column": self.label_column})
        for flag in self.files:
            D.check_table_file(getattr(self, flag[2:].replace("-", "_")), flag)
        if self.files:
            self._check_task_with_files()
        elif self.data_dir and D.canonical_name(self.name) and D.get_task(self.name).source == "packaged":
            raise D.DataError(f"--data-dir {self.data_dir} with the packaged corpus {self.name}: --data-dir holds a "
                              f"GLUE or RACE task's files, and {self.name} comes with the package; drop --data-dir, "
                              f"or name the task it holds (--task)")

    @property
    def files(self) -> list[str]:
        """The file flags given (the files are then the data: --task only names the metric and the
        paper's settings)."""
        return [f"--{k.replace('_', '-')}" for k in ("train_file", "eval_file", "test_file") if getattr(self, k)]

    def _check_task_with_files(self) -> None:
        """Refuses what the files would silently override: --data-dir and --eval-split pick the
        task's own data, and a --task whose problem (regression, multiple choice) the files'
        reading does not match would score them with the wrong metric."""
        files = " / ".join(self.files)
        replace = "replaces" if len(self.files) == 1 else "replace"
        if self.data_dir:
            raise D.DataError(f"--data-dir and {files} both given: --data-dir holds a task's own files, which "
                              f"{files} {replace}; give one of them")
        default_split = DataArgs.__dataclass_fields__["eval_split"].default
        if self.eval_split != default_split:
            raise D.DataError(f"--eval-split {self.eval_split} and {files} both given: --eval-split picks a split of "
                              f"the task's own data, which {files} {replace}; give one of them")
        canon = D.canonical_name(self.task) if self.task else None
        if canon is None:
            if self.task and not str(self.task).startswith("hf:"):
                raise D.DataError(f"--task {self.task!r} is not a known task ({', '.join(D.TASKS)}); beside {files} it "
                                  f"only picks the metric: name a known task or drop --task")
            return
        problem = D.get_task(canon).problem
        if problem == "multiple_choice":
            raise D.DataError(f"--task {self.task} is a multiple-choice task, and {files} "
                              f"{'holds' if len(self.files) == 1 else 'hold'} one text (or pair) per row; drop --task")
        if problem == "regression" and not self.regression:
            raise D.DataError(f"--task {self.task} is a regression task: pass --regression to read the label column "
                              f"of {files} as numbers")
        if problem != "regression" and self.regression:
            raise D.DataError(f"--regression and --task {self.task} (a classification task) both given; give one "
                              f"of them")

    @property
    def name(self) -> str:
        if self.files:
            return self.task or "files"
        return self.task or "rotten_tomatoes"

    @property
    def metric_kind(self) -> str | None:
        """The task name metrics are looked up by, or None for the user's own files (then the
        problem kind decides)."""
        return self.name if D.canonical_name(self.name) else None


def check_distinct_columns(**columns: str | None) -> None:
    """Refuses two column flags naming one column (``--text-column text --text-pair-column text``
    would read the text twice, silently), naming both flags. ``columns``: flag -> column (None:
    not given)."""
    seen: dict[str, str] = {}
    for flag, column in columns.items():
        if column is None:
            continue
        if column in seen:
            raise D.DataError(f"{seen[column]} and {flag} both name the column {column!r}; give each its own "
                              f"column")
        seen[column] = flag


@dataclass
class PreparedTask:
    """A tokenised task ready for Trainer. ``train`` / ``eval`` yield dicts of model inputs
    (input_ids, attention_mask, token_type_ids, labels), padded to ``max_length``.
    ``compute_metrics(predictions, labels)`` takes class ids (or regression values).
    ``tokenizer`` is saved beside every model the pipeline writes, with ``model_max_length`` N."""

    name: str
    problem: str  # "classification" | "regression" | "multiple_choice"
    num_labels: int
    label_names: list[str] | None
    train: Any
    eval: Any
    max_length: int
    compute_metrics: Callable[[np.ndarray, np.ndarray], dict]
    primary_metric: str
    test: Any = None
    truncated: dict = field(default_factory=dict)
    collator: Any = None  # batches `train` (e.g. dynamic padding); None: default stacking
    tokenizer: Any = None
    text_pairs: bool = False  # each example a text and its second text (the pair column); recorded in the model
    _train_lengths: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def train_lengths(self) -> list[int]:
        """Real tokens of each training example (:func:`.speed.example_lengths`), read once."""
        if self._train_lengths is None:
            from .speed import example_lengths

            self._train_lengths = example_lengths(self.train)
        return self._train_lengths

    @property
    def power_class(self):
        return PowerBertForMultipleChoice if self.problem == "multiple_choice" else PowerBertForSequenceClassification

    @property
    def hf_class(self):
        return AutoModelForMultipleChoice if self.problem == "multiple_choice" else AutoModelForSequenceClassification

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return predictions(self.problem, logits)


def predictions(problem: str, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) or, for regression, the single output per example."""
    if problem == "regression":
        return np.asarray(logits).reshape(-1)
    return np.asarray(logits).argmax(axis=-1)


def load_raw(args: DataArgs, label_names=None) -> dict:
    """{"train", "eval", "test"?} datasets (TextDataset / MultipleChoiceDataset)."""
    if args.files:
        if args.train_file is None and label_names is None:
            task = f" (--task {args.task} only names the metric and the paper's settings)" if args.task else ""
            raise D.DataError(f"{' / '.join(args.files)} without --train-file: with your own files the training "
                              f"data comes from --train-file{task}")
        if args.eval_file is None:
            raise D.DataError("--train-file without --eval-file: training needs the dev data it scores each epoch "
                              "on and keeps the best one by")
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


def subset(ds, n: int | None, seed: int):
    """A fixed, seeded subset of ``n`` examples (in their original order); ``n`` None or 0, or
    at least the dataset's size: the whole dataset."""
    if not n or n >= len(ds):
        return ds
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.select(sorted(idx.tolist()))


def _check_trainable(train) -> None:
    """A classification training split needs two classes present; otherwise Hugging Face would
    build a one-output (regression) head and every score would be meaningless."""
    if train.problem != "classification" or not train.has_labels:
        return
    present = sorted(set(train.labels))
    names = train.label_names or []
    if len(names) < 2 or len(present) < 2:
        seen = [names[i] if i < len(names) else i for i in present]
        raise D.DataError(f"the training data holds a single class ({', '.join(map(str, seen)) or 'none'}): "
                          f"classification needs examples of at least two labels (for numeric targets pass "
                          f"--regression)")


def prepare(args: DataArgs, tokenizer, max_length: int) -> PreparedTask:
    raw = load_raw(args)
    train = subset(raw["train"], args.max_train_examples, args.seed)
    _check_trainable(train)
    ev = subset(raw["eval"], args.max_eval_examples, args.seed)
    test = raw.get("test")
    if test is not None:
        test = subset(test, args.max_eval_examples, args.seed)
    # Training batches are padded to their longest row (dynamic padding: the model keeps
    # min(ℓ_j, rows) per layer); eval / test stay at the fixed N the speed-up is defined at.
    dynamic = train.problem != "multiple_choice"
    toks = {k: D.tokenize_dataset(v, tokenizer, max_length, padding=False if k == "train" and dynamic else "max_length")
            for k, v in (("train", train), ("eval", ev), ("test", test)) if v is not None}
    problem = train.problem
    kind = args.metric_kind or problem
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
        # [C, N] multiple-choice features are padded to N when tokenised: default stacking.
        collator=None if problem == "multiple_choice" else DataCollatorWithPadding(tokenizer),
        tokenizer=tokenizer,
        text_pairs=getattr(train, "text_pairs", None) is not None,
    )
