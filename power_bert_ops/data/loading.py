"""Loading one split of a task by name: GLUE TSVs, RACE JSON, packaged corpora, Hugging Face
``datasets`` (online only)."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from ._io import missing_column_error
from .corpora import load_corpus
from .files import build_label_names
from .glue import read_glue
from .race import read_race
from .registry import TASKS, TaskSpec, canonical_name, get_task, resolve_split
from .types import DataError, MultipleChoiceDataset, TextDataset

__all__ = ["SOURCES", "load_hf", "load_task"]

SOURCES = ("auto", "files", "hf")


def load_task(name_or_path, split: str = "train", *, data_dir=None, source: str = "auto", errors: str = "strict",
              levels=("high", "middle"), text_column: str = "text", label_column: str = "label",
              text_pair_column: str | None = None):
    """One split of a task as a :class:`TextDataset` (or :class:`MultipleChoiceDataset` for RACE).

    ``name_or_path``: a task name (:func:`task_names`; "SST-2", "STS-B" spellings accepted), a
    GLUE task folder (its name says the task: ``.../glue_data/CoLA``), a RACE folder (with
    ``train/high`` ...), or ``"hf:<path>[:<config>]"`` for any Hugging Face dataset (then
    ``text_column`` / ``text_pair_column`` / ``label_column`` name its columns).
    ``split``: "train", "dev" (or "validation" / "eval"), "test"; MNLI also "matched" /
    "mismatched" (= "dev_matched" / "dev_mismatched"; "dev" means matched), "test_matched",
    "test_mismatched". ``source``: "auto" (files when ``data_dir`` / ``$GLUE_DIR`` /
    ``$RACE_DIR`` is given, else Hugging Face ``datasets``), "files" or "hf".
    Packaged corpora ignore ``source`` and ``data_dir``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    name = str(name_or_path)
    if name.startswith("hf:"):
        return load_hf(name[3:], split, text_column=text_column, label_column=label_column,
                       text_pair_column=text_pair_column)
    spec = None
    if canonical_name(name) is None:
        path = Path(name).expanduser()
        if not path.exists():
            near = difflib.get_close_matches(name.lower(), list(TASKS), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise DataError(f"{name!r} is neither a known task ({', '.join(TASKS)}) nor an existing folder{hint}")
        if path.is_file():
            raise DataError(f"{path} is a file: use load_files(train_file, eval_file, text_column, label_column) "
                            f"for your own CSV / TSV / JSONL files")
        if any((path / s / "high").is_dir() or (path / s / "middle").is_dir() for s in ("train", "dev", "test")):
            spec, data_dir = TASKS["race"], path
        elif canonical_name(path.name) is not None and get_task(path.name).source == "glue":
            spec, data_dir = get_task(path.name), path
        else:
            raise DataError(f"{path}: cannot tell the task from the folder; name it after a GLUE task "
                            f"(CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI) or pass the task name "
                            f"with data_dir={str(path)!r}")
    else:
        spec = get_task(name)

    if spec.source == "packaged":
        splits = load_corpus(spec.name)
        key = resolve_split(spec, split)
        return splits[key]
    if spec.source == "glue" and data_dir is None and source != "hf" and os.environ.get("GLUE_DIR"):
        data_dir = os.environ["GLUE_DIR"]
    if spec.source == "race" and data_dir is None and source != "hf" and os.environ.get("RACE_DIR"):
        data_dir = os.environ["RACE_DIR"]
    if source == "hf" or spec.source == "hf" or (source == "auto" and data_dir is None):
        if source == "files" or (spec.source == "hf" and data_dir is not None):
            raise DataError(f"{spec.name}: no file reader for this task; use load_files() for local copies")
        return load_hf(spec, split)
    if data_dir is None:
        raise DataError(f"{spec.name}: source='files' needs data_dir (or $GLUE_DIR / $RACE_DIR)")
    if spec.source == "glue":
        return read_glue(spec, split, data_dir, errors=errors)
    return read_race(data_dir, resolve_split(spec, split), levels=levels, errors=errors)


# What to do without the hub, for a user of the command and of the Python functions alike.
OFFLINE_HINT = ("Offline, read local files instead: power-bert --data-dir <GLUE or RACE folder> or --train-file / "
                "--eval-file / --test-file; in Python, load_task(<task>, split, data_dir=...) or load_files(...)")


def _import_datasets(what: str):
    try:
        import datasets  # noqa: F401 (optional dependency, imported only here)
    except ImportError:
        raise DataError(
            f"{what}: loading from the Hugging Face hub needs the optional `datasets` package, which is not "
            f"installed (pip install datasets), and network access to huggingface.co. {OFFLINE_HINT}") from None
    return datasets


def load_hf(task_or_path, split: str = "train", *, text_column: str = "text", label_column: str = "label",
            text_pair_column: str | None = None):
    """A split from Hugging Face ``datasets`` (online only). ``task_or_path``: a :class:`TaskSpec`
    / registered task name (columns and labels known), or ``"<path>[:<config>]"`` (e.g. ``"nyu-mll/glue:cola"``)."""
    spec = task_or_path if isinstance(task_or_path, TaskSpec) else None
    if spec is None and canonical_name(str(task_or_path)) is not None:
        spec = get_task(str(task_or_path))
    if spec is not None:
        if spec.hf_name is None:
            raise DataError(f"{spec.name}: no Hugging Face dataset known for this task")
        key = resolve_split(spec, split)
        if key not in spec.hf_splits:
            raise DataError(f"{spec.name}: split {split!r} has no Hugging Face counterpart ({list(spec.hf_splits)})")
        path, config, hf_split = spec.hf_name[0], spec.hf_name[1], spec.hf_splits[key]
    else:
        path, _, config = str(task_or_path).partition(":")
        config = config or None
        key = {"dev": "validation", "eval": "validation"}.get(split, split)
        hf_split = key
    datasets = _import_datasets(f"{path}{'/' + config if config else ''}")
    try:
        ds = datasets.load_dataset(path, config, split=hf_split)
    except Exception as exc:  # offline, unknown name, no such split...
        raise DataError(f"could not load Hugging Face dataset {path!r} (config {config!r}, split {hf_split!r}): "
                        f"{type(exc).__name__}: {exc}. {OFFLINE_HINT}") from exc

    if spec is not None and spec.problem == "multiple_choice":
        answers = list(ds["answer"])
        labelled = all(a in ("A", "B", "C", "D") for a in answers)
        return MultipleChoiceDataset(
            task=spec.name, contexts=list(ds["article"]), questions=list(ds["question"]),
            options=[list(o) for o in ds["options"]],
            labels=[ord(a) - ord("A") for a in answers] if labelled else None,
            ids=[str(x) for x in ds["example_id"]] if "example_id" in ds.column_names else None, split=key,
            stats={"source": f"hf:{path}/{config}:{hf_split}"})

    if spec is not None:
        text_column, text_pair_column, label_column = spec.hf_columns
    columns = list(ds.column_names)
    for col, role in ((text_column, "text column"), (text_pair_column, "text-pair column")):
        if col is not None and col not in columns:
            raise missing_column_error(f"hf:{path}", col, role, columns)
    texts = ["" if t is None else str(t) for t in ds[text_column]]
    pairs = ["" if t is None else str(t) for t in ds[text_pair_column]] if text_pair_column else None
    raw = list(ds[label_column]) if label_column in columns else None
    is_regression = spec.is_regression if spec is not None else bool(raw) and isinstance(raw[0], float)
    labels, label_names = None, None
    if spec is not None and not is_regression:
        label_names = list(spec.label_names)
    if raw is not None and not all(y is None or y == -1 for y in raw):  # GLUE test splits carry -1
        if is_regression:
            labels = [float(y) for y in raw]
        elif spec is not None:
            mapping = spec.hf_label_map or {i: i for i in range(len(label_names))}
            labels = [mapping[int(y)] for y in raw]
        else:
            feature = ds.features.get(label_column)
            names = getattr(feature, "names", None)
            if names:
                label_names, labels = list(names), [int(y) for y in raw]
            else:
                label_names = build_label_names({str(y) for y in raw})
                index = {n: i for i, n in enumerate(label_names)}
                labels = [index[str(y)] for y in raw]
    ids = [str(x) for x in ds["idx"]] if "idx" in columns else None
    return TextDataset(task=spec.name if spec is not None else path, texts=texts, text_pairs=pairs, labels=labels,
                       label_names=label_names, is_regression=is_regression, ids=ids, split=key,
                       stats={"source": f"hf:{path}/{config}:{hf_split}", "skipped_rows": 0,
                              "empty_texts": sum(not t.strip() for t in texts)})
