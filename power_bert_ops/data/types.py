"""In-memory dataset types shared by every loader, and the loaders' error type."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

__all__ = ["DataError", "MultipleChoiceDataset", "TextDataset"]


class DataError(ValueError):
    """Bad input data: a missing column, an empty file, undecodable bytes, unknown labels...
    The message names the file (and column / line / labels) at fault."""


def _pick(seq, indices):
    return None if seq is None else [seq[i] for i in indices]


def _item(out: dict, i: int, **columns) -> dict:
    """``out`` with ``column[i]`` added under each name whose column is not None, in order."""
    for name, column in columns.items():
        if column is not None:
            out[name] = column[i]
    return out


@dataclass
class TextDataset:
    """Single-sentence or sentence-pair examples with class ids or regression targets.

    ``labels`` holds class ids (indices into ``label_names``) or floats (``is_regression``), or
    is None for an unlabelled split (GLUE test sets). ``ids`` are the source's example ids where
    it has them (GLUE ``index`` column: needed for test-set submissions). ``stats`` records what
    the reader noticed: ``skipped_rows`` (malformed lines dropped), ``empty_texts`` (empty or
    NaN text cells kept as ""), ``source`` (file or corpus name).
    """

    task: str
    texts: list[str]
    labels: list | None = None
    label_names: list[str] | None = None
    is_regression: bool = False
    text_pairs: list[str] | None = None
    ids: list[str] | None = None
    split: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.texts)
        for name in ("labels", "text_pairs", "ids"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"TextDataset({self.task!r}): {name} has {len(value)} entries, texts has {n}")

    problem = property(lambda self: "regression" if self.is_regression else "classification")
    num_labels = property(lambda self: 1 if self.is_regression else len(self.label_names or ()))
    has_labels = property(lambda self: self.labels is not None)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return _item({"text": self.texts[i]}, i, text_pair=self.text_pairs, label=self.labels, id=self.ids)

    def select(self, indices: Sequence[int]) -> "TextDataset":
        """A new dataset holding the examples at ``indices`` (in that order)."""
        indices = list(indices)
        return replace(self, texts=_pick(self.texts, indices), labels=_pick(self.labels, indices),
                       text_pairs=_pick(self.text_pairs, indices), ids=_pick(self.ids, indices),
                       stats=dict(self.stats))

    def label_counts(self) -> dict[str, int]:
        """Examples per label name (classification with labels only)."""
        if self.labels is None or self.is_regression:
            return {}
        counts = {name: 0 for name in self.label_names}
        for y in self.labels:
            counts[self.label_names[y]] += 1
        return counts


@dataclass
class MultipleChoiceDataset:
    """Multiple-choice examples (RACE): a context (article), a question and C options each;
    ``labels`` are indices into the options (None when unlabelled)."""

    task: str
    contexts: list[str]
    questions: list[str]
    options: list[list[str]]
    labels: list[int] | None = None
    ids: list[str] | None = None
    split: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    is_regression = False
    problem = "multiple_choice"

    def __post_init__(self):
        n = len(self.contexts)
        for name in ("questions", "options", "labels", "ids"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"MultipleChoiceDataset({self.task!r}): {name} has {len(value)} entries, "
                                f"contexts has {n}")
        counts = sorted({len(o) for o in self.options})
        if len(counts) > 1:
            raise DataError(f"MultipleChoiceDataset({self.task!r}): examples have different numbers of "
                            f"options {counts}; every example needs the same count")

    @property
    def num_choices(self) -> int:
        return len(self.options[0]) if self.options else 0

    @property
    def label_names(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(self.num_choices)]

    num_labels = property(lambda self: self.num_choices)
    has_labels = property(lambda self: self.labels is not None)

    def __len__(self) -> int:
        return len(self.contexts)

    def __getitem__(self, i: int) -> dict:
        out = {"context": self.contexts[i], "question": self.questions[i], "options": self.options[i]}
        return _item(out, i, label=self.labels, id=self.ids)

    def select(self, indices: Sequence[int]) -> "MultipleChoiceDataset":
        indices = list(indices)
        return replace(self, contexts=_pick(self.contexts, indices), questions=_pick(self.questions, indices),
                       options=_pick(self.options, indices), labels=_pick(self.labels, indices),
                       ids=_pick(self.ids, indices), stats=dict(self.stats))
