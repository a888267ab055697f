"""RACE as distributed (``RACE/{train,dev,test}/{high,middle}/*.txt``): each file holds one JSON
object ``{"article", "questions": [...], "options": [[4 strings], ...], "answers": ["A", ...],
"id"}``. Every question becomes one multiple-choice example (context = article)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ._io import decode_bytes
from .types import DataError, MultipleChoiceDataset

__all__ = ["read_race", "race_split_dir", "question_with_option"]

LEVELS = ("high", "middle")
_SPLIT_DIRS = {"train": "train", "dev": "dev", "validation": "dev", "eval": "dev", "test": "test"}


def race_split_dir(data_dir, split: str) -> Path:
    data_dir = Path(data_dir).expanduser()
    key = _SPLIT_DIRS.get(str(split).lower())
    if key is None:
        raise DataError(f"RACE has no split {split!r}; its splits are train, dev, test")
    for root in (data_dir, data_dir / "RACE"):
        if (root / key).is_dir():
            return root / key
    raise DataError(f"{data_dir}: no RACE {key}/ folder (expected {data_dir}/{key}/high and {key}/middle)")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_race(data_dir, split: str = "train", levels=LEVELS, errors: str = "strict") -> MultipleChoiceDataset:
    """All questions of ``split`` for the given ``levels`` ("high" = RACE-H, "middle" = RACE-M),
    files in natural name order (high before middle). Examples without an answer (none in the
    released RACE) make the whole split unlabelled."""
    split_dir = race_split_dir(data_dir, split)
    levels = (levels,) if isinstance(levels, str) else tuple(levels)
    for level in levels:
        if level not in LEVELS:
            raise DataError(f"RACE level {level!r} unknown; levels are {LEVELS}")
    contexts, questions, options, labels, ids = [], [], [], [], []
    unlabelled = 0
    n_files = 0
    for level in levels:
        level_dir = split_dir / level
        if not level_dir.is_dir():
            raise DataError(f"{split_dir}: missing {level}/ folder")
        files = sorted((p for p in level_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=_natural_key)
        for path in files:
            n_files += 1
            text = decode_bytes(path.read_bytes(), str(path), errors)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not a RACE JSON object ({exc.msg} at line {exc.lineno} column {exc.colno})") \
                    from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in ("article", "questions", "options") if k not in obj]
            if missing:
                raise DataError(f"{path}: RACE keys {missing} missing; keys present: {sorted(obj)}")
            qs, opts = obj["questions"], obj["options"]
            answers = obj.get("answers")
            if len(opts) != len(qs) or (answers is not None and len(answers) != len(qs)):
                raise DataError(f"{path}: {len(qs)} questions but {len(opts)} option lists and "
                                f"{len(answers) if answers is not None else 'no'} answers")
            base = obj.get("id") or f"{level}/{path.name}"
            for q_idx, (q, o) in enumerate(zip(qs, opts)):
                if answers is None:
                    unlabelled += 1
                    y = -1
                else:
                    a = str(answers[q_idx]).strip().upper()
                    if len(a) != 1 or not ("A" <= a < chr(ord("A") + len(o))):
                        raise DataError(f"{path}: question {q_idx} has answer {answers[q_idx]!r}; expected one of "
                                        f"{[chr(ord('A') + i) for i in range(len(o))]}")
                    y = ord(a) - ord("A")
                contexts.append(obj["article"])
                questions.append(q)
                options.append(list(o))
                labels.append(y)
                ids.append(f"{base}-{q_idx}")
    if not contexts:
        raise DataError(f"{split_dir}: no RACE questions found in {', '.join(levels)} ({n_files} files)")
    if unlabelled and unlabelled != len(labels):
        raise DataError(f"{split_dir}: {unlabelled} of {len(labels)} questions have no answer")
    return MultipleChoiceDataset(
        task="race", contexts=contexts, questions=questions, options=options,
        labels=None if unlabelled else labels, ids=ids, split=_SPLIT_DIRS[str(split).lower()],
        stats={"source": str(split_dir), "files": n_files, "levels": list(levels)},
    )


def question_with_option(question: str, option: str) -> str:
    """The second segment for one choice: RACE's cloze questions ("... _ ...") get the option
    filled in; other questions are followed by the option."""
    if "_" in question:
        return question.replace("_", option)
    return f"{question} {option}".strip()
