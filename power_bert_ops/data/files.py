"""Your own data: CSV / TSV / JSONL files, chosen by extension.

- ``.csv``: comma-separated with a header row, standard (RFC 4180) quoting, as pandas writes it.
- ``.tsv`` / ``.tab``: tab-separated with a header row, same quoting rules (pass
  ``quoting=csv.QUOTE_NONE`` for GLUE-style files whose texts hold bare quote characters).
- ``.jsonl`` / ``.ndjson``: one JSON object per line; ``.json``: a JSON array of objects, or
  JSON lines.

Labels may be strings or integers. The label <-> id mapping comes from the train file: the
distinct labels, sorted (numerically when every label is an integer, else as strings), so the
same file always gives the same ids; save it with :func:`save_label_map` and pass it back (via
``label_names`` or ``label_map_file``) to read evaluation data alone. Files are read as strict
UTF-8 (``errors="replace"`` to substitute bad bytes). Empty or NaN text cells are kept as "" and
counted in ``stats["empty_texts"]``. A CSV / TSV row whose field count differs from the header's,
or a header naming one column twice, raises :class:`DataError` (no row is dropped, so row i of
the data is row i of the file).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Sequence

from .._text import count_text
from ._io import big_csv_fields, check_file, is_empty_cell, logger, missing_column_error, read_text
from .types import DataError, TextDataset

__all__ = ["build_label_names", "check_table_file", "load_files", "load_label_map", "read_table", "read_text_file",
           "save_label_map"]

_DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSON = (".jsonl", ".ndjson", ".json")
_MAX_LISTED = 10
_MAX_RAGGED_LISTED = 5
_INT_RE = re.compile(r"[+-]?\d+")
_WHOLE_RE = re.compile(r"[+-]?\d+(?:\.0*)?")  # "1", or "1.0" as pandas writes a float column of whole numbers


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_table_file(path, flag: str | None = None) -> Path:
    """``path`` as a Path, checked before it is read: a file is there (not a folder) and its type is
    one :func:`read_table` reads. ``flag``: the option that gave the path (e.g. ``--train-file``),
    named first in the :class:`DataError`."""
    where = f"{flag} {path}" if flag else str(path)
    path = check_file(path, where)  # before the type: a folder or a missing file is that, whatever its name
    ext = _suffix(path)
    if ext not in _DELIMITED and ext not in _JSON:
        raise DataError(f"{where}: unsupported file type {ext or '(no extension)'!r}; use .csv, .tsv, .tab, .jsonl "
                        f"or .json")
    return path


def read_table(path, errors: str = "strict", quoting: int | None = None) -> tuple[list[str], list[dict], dict]:
    """Rows of a CSV / TSV / JSONL file as ``(columns, rows, stats)``; each row a dict column ->
    cell (str for CSV / TSV; any JSON value for JSONL). A CSV / TSV record (quoted fields may span
    lines) whose field count differs from the header's, or a header naming a column twice, raises
    :class:`DataError` naming the file and the lines. ``stats`` has ``skipped_rows`` (0) and
    ``skipped_lines`` ([]), as every reader's stats do; a JSON file's also ``record_lines`` (each
    row's line, or its place in a JSON array) and ``record_unit`` ('line' or 'record')."""
    path = check_table_file(path)
    ext = _suffix(path)
    text = read_text(path, errors)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if ext in _JSON:
        return _read_json(path, text)
    quoting = csv.QUOTE_MINIMAL if quoting is None else quoting
    with big_csv_fields():
        # strict: a quote left open (which would swallow the rest of the file into one text) or
        # text after a closing quote is an error, not a guess
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DELIMITED[ext], quoting=quoting, strict=True)
        try:
            header = next(reader)
            while not any(c.strip() for c in header):
                header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        except csv.Error as exc:
            raise DataError(f"{path}: cannot parse the header ({exc})") from None
        columns = [c.strip() for c in header]
        # unnamed columns (a spreadsheet's trailing empty ones) are never read: they may repeat
        twice = [c for c in dict.fromkeys(columns) if c and columns.count(c) > 1]
        if twice:
            raise DataError(f"{path}: the header (line {reader.line_num}) names the column"
                            f"{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} more than once; give "
                            f"each column its own name")
        rows, ragged, n_ragged = [], [], 0
        try:
            start = reader.line_num + 1  # the line the next record starts on
            for row in reader:
                line, start = start, reader.line_num + 1
                if not row or (len(row) == 1 and not row[0].strip() and len(columns) > 1):
                    continue  # blank line
                if len(row) != len(columns):
                    n_ragged += 1
                    if len(ragged) < _MAX_RAGGED_LISTED:
                        ragged.append(f"line {line} has {len(row)}")
                    continue
                rows.append(dict(zip(columns, row)))
        except csv.Error as exc:
            hint = _quoting_hint(ext, quoting)
            raise DataError(f"{path}: the record starting at line {start} cannot be read ({exc}): a quote left open, "
                            f"or text after a closing quote{hint and hint + ', and so must one that starts with a quote'}"
                            ) from None
    if n_ragged:
        more = f", and {n_ragged - len(ragged)} more" if n_ragged > len(ragged) else ""
        hint = _quoting_hint(ext, quoting)
        if _DELIMITED[ext] == "," and any("\t" in c for c in columns):
            hint = "; its header is separated by tabs: name a tab-separated file .tsv"
        raise DataError(f"{path}: {n_ragged} row{'s do' if n_ragged > 1 else ' does'} not have the header's "
                        f"{len(columns)} fields ({', '.join(ragged)}{more}){hint}")
    return columns, rows, {"skipped_rows": 0, "skipped_lines": []}


def _quoting_hint(ext: str, quoting: int) -> str:
    """How a CSV / TSV text that holds the delimiter, a quote or a line break is written."""
    if quoting == csv.QUOTE_NONE:
        return ""
    sep = "a comma" if _DELIMITED[ext] == "," else "a tab"
    return f"; a text holding {sep}, a quote or a line break must be in double quotes (\"...\", with \"\" for a quote)"


def _read_json(path: Path, text: str):
    stripped = text.lstrip()
    objs = []
    if _suffix(path) == ".json" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        objs = [(i + 1, o) for i, o in enumerate(data)]
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                objs.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    columns: dict[str, None] = {}
    rows = []
    for lineno, obj in objs:
        if not isinstance(obj, dict):
            raise DataError(f"{path}: record at line {lineno} is a JSON {type(obj).__name__}, expected an object")
        columns.update(dict.fromkeys(obj))
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: empty file (no JSON records)")
    # where each record is: its line in a JSONL file, its place in a JSON array
    unit = "record" if _suffix(path) == ".json" and stripped.startswith("[") else "line"
    return list(columns), rows, {"skipped_rows": 0, "skipped_lines": [], "record_unit": unit,
                                 "record_lines": [lineno for lineno, _ in objs]}


def _listed(places: list) -> str:
    """The first few of ``places``, and ' ...' when there are more."""
    return f"{places[:_MAX_LISTED]}{' ...' if len(places) > _MAX_LISTED else ''}"


def _check_json_texts(path: Path, rows: list[dict], unit: str, where: list[int], columns) -> None:
    """Refuses JSON records without a text key (a record with ``null`` or ``""`` there is an
    empty text, kept with a warning like an empty CSV cell) or whose text is a list or object,
    naming their lines (JSONL) or places (a JSON array)."""
    for col, role in columns:
        if col is None:
            continue
        absent = [where[i] for i, row in enumerate(rows) if col not in row]
        if absent:
            raise DataError(f"{path}: {count_text(len(absent), 'record has', 'records have')} no {col!r} key, "
                            f"the {role} ({unit}s {_listed(absent)}); give every record one (null or \"\" for an empty text)")
        bad = [(where[i], "array" if isinstance(row[col], list) else "object") for i, row in enumerate(rows)
               if isinstance(row[col], (list, dict))]
        if bad:
            kinds = " or ".join(sorted({kind for _, kind in bad}))
            raise DataError(f"{path}: {count_text(len(bad), 'record has', 'records have')} a JSON {kinds} as the "
                            f"{role} {col!r} ({unit}s {_listed([w for w, _ in bad])}); a text must be a string")


def _text(value) -> str:
    """A text cell: None / NaN become "" (counted by the caller), anything else its str."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _label_key(value) -> str | None:
    """A label cell as a string key (JSON 3, JSON 3.0, CSV "3" and CSV "3.0" agree); None when empty."""
    if is_empty_cell(value):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    s = str(value).strip()
    return str(int(s.split(".")[0])) if _WHOLE_RE.fullmatch(s) else s


def build_label_names(keys) -> list[str]:
    """Distinct labels sorted for determinism: numerically when all are integers, else as strings."""
    distinct = set(keys)
    if all(_INT_RE.fullmatch(k) for k in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def read_text_file(path, text_column: str, label_column: str | None, text_pair_column: str | None = None, *,
                   label_names: Sequence[str] | None = None, is_regression: bool = False, errors: str = "strict",
                   quoting: int | None = None, split: str | None = None, task: str | None = None,
                   require_labels: bool = True, label_ids: bool = False) -> tuple[TextDataset, list[str | None]]:
    """Read one file into a :class:`TextDataset`. Returns the dataset and the raw label keys.

    With ``label_names`` labels become their index (unknown labels raise :class:`DataError`
    listing them); without, ``labels`` stays None and the caller maps the returned keys. A file
    without ``label_column`` is unlabelled when ``require_labels`` is False. ``label_ids``: the
    index of ``label_names`` is the class id (a model's ``id2label``), so a label column holding
    no name and only whole numbers 0..K-1 is read as class ids (the Hugging Face datasets' way).
    """
    path = Path(path)
    columns, rows, stats = read_table(path, errors=errors, quoting=quoting)
    if not rows:
        raise DataError(f"{path}: header but no data rows")
    for col, role in ((text_column, "text column (--text-column)"),
                      (text_pair_column, "text-pair column (--text-pair-column)")):
        if col is not None and col not in columns:
            raise missing_column_error(path, col, role, columns)
    has_labels = label_column is not None and label_column in columns
    if label_column is not None and not has_labels and require_labels:
        raise missing_column_error(path, label_column, "label column (--label-column)", columns)

    # where a row is, as a message names it: a CSV's data row, a JSONL file's line, a JSON array's record
    unit, where = stats.pop("record_unit", "data row"), stats.pop("record_lines", None)
    place = (lambda i: where[i]) if where is not None else (lambda i: i + 1)
    if where is not None:
        _check_json_texts(path, rows, unit, where, [(text_column, "text column (--text-column)"),
                                                    (text_pair_column, "text-pair column (--text-pair-column)")])
    texts, pairs, keys = [], [], []
    empty_texts, empty_lines, empty_label_rows, empty_columns = 0, [], [], []
    for i, row in enumerate(rows):
        t = row.get(text_column)
        p = row.get(text_pair_column) if text_pair_column else None
        blank = [c for c, v in ((text_column, t), (text_pair_column, p)) if c and is_empty_cell(v)]
        if blank:
            empty_texts += 1
            empty_lines.append(place(i))
            empty_columns += [c for c in blank if c not in empty_columns]
        texts.append(_text(t))
        if text_pair_column:
            pairs.append(_text(p))
        if has_labels:
            k = _label_key(row.get(label_column))
            if k is None:
                empty_label_rows.append(place(i))
            keys.append(k)
    if has_labels and not require_labels and len(empty_label_rows) == len(rows):
        has_labels, keys, empty_label_rows = False, [], []  # an unlabelled test file with an empty label column
    if empty_label_rows:
        raise DataError(f"{path}: {count_text(len(empty_label_rows), 'row has', 'rows have')} an empty {label_column!r} ({unit}s "
                        f"{_listed(empty_label_rows)})")
    if empty_texts:
        logger.warning("%s: %s with an empty or NaN text cell in %s (%ss %s), kept as empty strings", path,
                       count_text(empty_texts, "row"), " or ".join(map(repr, empty_columns)), unit,
                       _listed(empty_lines))

    labels = None
    if has_labels and is_regression:
        labels = []
        for i, k in enumerate(keys):
            try:
                y = float(k)
            except ValueError:
                raise DataError(f"{path}: {label_column!r} in {unit} {place(i)} is {k!r}, not a number "
                                f"(regression)") from None
            if not math.isfinite(y):
                raise DataError(f"{path}: {label_column!r} in {unit} {place(i)} is {k!r} (regression needs finite)")
            labels.append(y)
    ds = TextDataset(
        task=task or path.stem, texts=texts, text_pairs=pairs if text_pair_column else None, labels=labels,
        label_names=None if is_regression or label_names is None else list(label_names),
        is_regression=is_regression, split=split,
        stats={"source": str(path), "empty_texts": empty_texts, **stats},
    )
    if has_labels and not is_regression and label_names is not None:
        _apply_labels(ds, keys, label_names, label_ids)
    return ds, keys if has_labels else None


def _listed(values, limit: int = 10) -> str:
    """``values`` as a list, the first ``limit`` of them and how many more."""
    values = list(values)
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"{values[:limit]}{more}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _apply_labels(ds: TextDataset, keys: list[str], label_names: Sequence[str], label_ids: bool = False) -> None:
    """Labels as indices of ``label_names``; with ``label_ids``, a column holding no name and only
    class ids 0..K-1 is read as those ids."""
    index = {name: i for i, name in enumerate(label_names)}
    ds.label_names = list(label_names)
    k = len(label_names)
    if label_ids and not any(key in index for key in keys) and all(_INT_RE.fullmatch(key) for key in keys):
        wrong = [key for key in keys if not 0 <= int(key) < k]
        if wrong:
            raise DataError(f"{ds.stats.get('source')}: class ids out of range 0..{k - 1} (the model has "
                            f"{count_text(k, 'label')}: {list(label_names)}): "
                            f"{_listed(sorted(set(wrong), key=lambda s: (len(s), s)))} "
                            f"({count_text(len(wrong), 'row')})")
        ds.labels = [int(key) for key in keys]
        ds.stats["labels_read_as"] = "class ids"
        return
    unseen = sorted({key for key in keys if key not in index}, key=lambda s: (not _INT_RE.fullmatch(s), len(s), s))
    if unseen:
        n_rows = sum(key not in index for key in keys)
        where = "among the model's labels" if label_ids else "seen in the training data"
        ids = f" (or, in every row, class ids 0..{k - 1})" if label_ids else ""
        numbers = all(_is_number(key) for key in (*unseen, *label_names))
        hint = ("; they are numbers with fractions: for numeric targets pass --regression"
                if numbers and not all(_INT_RE.fullmatch(key) for key in (*unseen, *label_names)) else "")
        raise DataError(f"{ds.stats.get('source')}: labels not {where}: {_listed(unseen)} "
                        f"({count_text(n_rows, 'row')}); known labels: {_listed(label_names)}{ids}{hint}")
    ds.labels = [index[key] for key in keys]


def save_label_map(path, label_names: Sequence[str]) -> None:
    """Write ``{"label_names": [...], "label2id": {...}}`` as JSON."""
    label_names = list(label_names)
    Path(path).write_text(json.dumps({"label_names": label_names,
                                      "label2id": {n: i for i, n in enumerate(label_names)}}, indent=2) + "\n",
                          encoding="utf-8")


def load_label_map(path) -> list[str]:
    """The label names (index = id) saved by :func:`save_label_map`; also accepts a plain JSON
    list or a ``{label: id}`` dict."""
    try:
        obj = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a label map (invalid JSON: {exc.msg})") from None
    if isinstance(obj, dict) and "label_names" in obj:
        obj = obj["label_names"]
    elif isinstance(obj, dict) and "label2id" in obj:
        obj = obj["label2id"]
    if isinstance(obj, dict):
        ids = sorted(obj.values())
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: label ids {ids} are not 0..{len(ids) - 1}")
        inv = {v: k for k, v in obj.items()}
        obj = [inv[i] for i in range(len(ids))]
    if not isinstance(obj, list) or not obj:
        raise DataError(f"{path}: expected a label map (list of label names or label2id dict)")
    return [str(x) for x in obj]


def load_files(train_file=None, eval_file=None, text_column: str = "text", label_column: str | None = "label",
               text_pair_column: str | None = None, test_file=None, *, is_regression: bool = False,
               label_names: Sequence[str] | None = None, label_map_file=None, errors: str = "strict",
               quoting: int | None = None, task: str | None = None) -> dict[str, TextDataset]:
    """Read train / eval / test files into ``{"train": ..., "eval": ..., "test": ...}`` (only
    those given). Label names come from ``label_names``, else ``label_map_file``, else the train
    file (sorted), else the eval file (with a warning). Eval / test labels unseen in train raise
    :class:`DataError` listing them. ``test_file`` may lack the label column (then unlabelled).
    """
    given = [(name, f) for name, f in (("train", train_file), ("eval", eval_file), ("test", test_file)) if f]
    if not given:
        raise DataError("load_files: pass at least one of train_file, eval_file, test_file")
    if label_names is None and label_map_file is not None:
        label_names = load_label_map(label_map_file)
    label_ids = label_names is not None  # the caller's names are indexed by class id
    if label_names is not None:
        label_names = [_label_key(n) or str(n) for n in label_names]
    out: dict[str, TextDataset] = {}
    for name, f in given:
        ds, keys = read_text_file(f, text_column, label_column, text_pair_column, label_names=label_names,
                                  is_regression=is_regression, errors=errors, quoting=quoting, split=name,
                                  task=task, require_labels=name != "test", label_ids=label_ids)
        if keys is not None and not is_regression and label_names is None:
            if name != "train":
                logger.warning("load_files: no train file or label map; label ids come from %s", f)
            label_names = build_label_names(keys)
            _apply_labels(ds, keys, label_names)
        if train_file and name != "train":
            ds.stats["label_source"] = str(train_file)
        out[name] = ds
    return out
