"""GLUE TSV files as GLUE distributes them (``<root>/<Task>/{train,dev,test}.tsv``; MNLI
``dev_matched.tsv`` / ``dev_mismatched.tsv`` / ``test_matched.tsv`` / ``test_mismatched.tsv``).

Layouts (tab-separated, never quote-escaped: read with ``csv.QUOTE_NONE``):

========  =====================================================  ==========================
task      train / dev columns used                               test (no labels)
========  =====================================================  ==========================
CoLA      NO header: source, label, original_label, sentence     header index, sentence
SST-2     header sentence, label                                 index, sentence
MRPC      header Quality, #1 ID, #2 ID, #1 String, #2 String     index, #1 ID, ..., #2 String
QQP       header id qid1 qid2 question1 question2 is_duplicate   id, question1, question2
STS-B     header index genre ... sentence1 sentence2 score       (same, no score)
MNLI      header index ... sentence1 sentence2 ... gold_label    (same, no labels)
QNLI      header index question sentence label                   index, question, sentence
RTE/WNLI  header index sentence1 sentence2 label                 index, sentence1, sentence2
========  =====================================================  ==========================

Rows whose field count differs from the header's (the real QQP file has a few, where a
question holds a line break) are skipped and counted in ``stats["skipped_rows"]``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .._text import count_text
from ._io import big_csv_fields, logger, missing_column_error, read_text
from .registry import TASKS, TaskSpec, canonical_name, get_task, resolve_split
from .types import DataError, TextDataset

__all__ = ["glue_file", "read_glue", "read_glue_file"]

_MAX_LISTED = 5


def glue_task_dir(spec: TaskSpec, data_dir) -> Path:
    """``data_dir`` itself when it holds the task's files, else ``data_dir/<GLUE folder>``
    (so both the GLUE root and the task folder work)."""
    data_dir = Path(data_dir).expanduser()
    sub = data_dir / spec.glue_folder
    if sub.is_dir():
        return sub
    other = canonical_name(data_dir.name)
    if other is not None and other != spec.name and TASKS[other].source == "glue":
        raise DataError(f"{data_dir} is the {TASKS[other].glue_folder} folder, not {spec.glue_folder}/ "
                        f"(no {spec.glue_folder}/ folder in it)")
    if any((data_dir / f).is_file() for f in spec.split_files.values()):
        return data_dir
    if not data_dir.exists():
        raise DataError(f"GLUE data directory {data_dir} does not exist")
    raise DataError(f"{data_dir}: no {spec.glue_folder}/ folder and no {spec.name} files "
                    f"({', '.join(spec.split_files.values())}) in it")


def glue_file(task, split: str, data_dir) -> Path:
    """Path of ``split``'s TSV file for a GLUE ``task`` under ``data_dir``."""
    spec = get_task(task) if isinstance(task, str) else task
    if spec.source != "glue":
        raise DataError(f"{spec.name!r} is not a GLUE task")
    split = resolve_split(spec, split)
    path = glue_task_dir(spec, data_dir) / spec.split_files[split]
    if not path.is_file():
        raise DataError(f"{spec.name} {split}: {path} not found")
    return path


def read_glue(task, split: str, data_dir, errors: str = "strict") -> TextDataset:
    """Read one split of a GLUE task from its TSV file (see the module docstring)."""
    spec = get_task(task) if isinstance(task, str) else task
    split = resolve_split(spec, split)
    return read_glue_file(spec, glue_file(spec, split, data_dir), split=split, errors=errors)


def read_glue_file(task, path, split: str = "train", errors: str = "strict") -> TextDataset:
    """Parse one GLUE TSV file laid out as ``task``'s ``split`` (test splits carry no labels)."""
    spec = get_task(task) if isinstance(task, str) else task
    split = resolve_split(spec, split)
    is_test = split.startswith("test")
    path = Path(path)
    text = read_text(path, errors)
    with big_csv_fields():
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)]
    line_of = range(1, len(rows) + 1)  # with QUOTE_NONE a row is one line (blank lines give [])
    if not any(rows):
        raise DataError(f"{path}: empty file ({spec.name} {split})")

    columns, start, (i_text, i_pair, i_label, i_id) = _glue_columns(spec, rows, is_test, path)

    texts, pairs, labels, ids = [], [], [], []
    skipped, skipped_lines, empty = 0, [], 0
    bad_labels: dict[str, list[int]] = {}
    label_index = {name: i for i, name in enumerate(spec.label_names or ())}
    for k in range(start, len(rows)):
        row = rows[k]
        if not row:
            continue  # blank line
        if len(row) != len(columns):
            skipped += 1
            if len(skipped_lines) < _MAX_LISTED:
                skipped_lines.append(line_of[k])
            continue
        t = row[i_text]
        p = row[i_pair] if i_pair is not None else None
        if not t.strip() or (p is not None and not p.strip()):
            empty += 1
        if i_label is not None:
            raw = row[i_label].strip()
            y = _glue_label(spec, raw, label_index)
            if y is None:
                bad_labels.setdefault(raw, []).append(line_of[k])
                continue
            labels.append(y)
        texts.append(t)
        if p is not None:
            pairs.append(p)
        if i_id is not None:
            ids.append(row[i_id])

    if bad_labels:
        _raise_bad_labels(spec, path, bad_labels)
    if skipped:
        logger.warning("%s: skipped %d malformed rows (field count differs from the %d columns; first at lines %s)",
                       path, skipped, len(columns), skipped_lines)
    if not texts:
        what = f"all {skipped} data rows are malformed (expected {len(columns)} tab-separated fields)" if skipped \
            else "header but no data rows"
        raise DataError(f"{path}: {what} ({spec.name} {split})")
    if empty:
        logger.warning("%s: %d rows with an empty text cell", path, empty)
    return TextDataset(
        task=spec.name, texts=texts, text_pairs=pairs if i_pair is not None else None,
        labels=None if is_test else labels,
        label_names=list(spec.label_names) if spec.label_names else None, is_regression=spec.is_regression,
        ids=ids if i_id is not None else None, split=split,
        stats={"source": str(path), "skipped_rows": skipped, "skipped_lines": skipped_lines, "empty_texts": empty},
    )


def _glue_columns(spec, rows, is_test: bool, path):
    """(column names, index of the first data row, column indices of text, text pair, label and
    id: None where the split has no such column)."""
    if spec.headerless_columns is not None and not is_test:
        columns, start = list(spec.headerless_columns), 0
    else:
        columns, start = [c.strip() for c in rows[0]], 1

    def col(name, role, required=True):
        if name in columns:
            return columns.index(name)
        if required:
            raise missing_column_error(path, name, f"{spec.name} {role} column", columns)
        return None

    i_text = col(spec.text_column, "text")
    i_pair = col(spec.text_pair_column, "text-pair") if spec.text_pair_column else None
    i_label = None if is_test else col(spec.label_column, "label")
    i_id = col(spec.id_column, "id", required=False) if spec.id_column else None
    return columns, start, (i_text, i_pair, i_label, i_id)


def _glue_label(spec, raw: str, label_index: dict):
    """The label a cell holds: a float (regression) or a class id; None when it is not valid."""
    if spec.is_regression:
        try:
            return float(raw)
        except ValueError:
            return None
    return label_index.get(raw)


def _raise_bad_labels(spec, path, bad_labels: dict[str, list[int]]):
    listed = ", ".join(f"{lab!r} ({count_text(len(lines), 'row')}, first at line {lines[0]})"
                       for lab, lines in sorted(bad_labels.items()))
    expected = "numbers" if spec.is_regression else list(spec.label_names)
    raise DataError(f"{path}: {spec.label_column!r} values not valid for {spec.name} (expected {expected}): "
                    f"{listed}")
