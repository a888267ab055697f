"""Tokenising a :class:`TextDataset` / :class:`MultipleChoiceDataset` into a torch Dataset that
transformers' Trainer consumes: each item a dict of ``input_ids``, ``attention_mask``,
``token_type_ids`` (when the tokenizer makes them) and ``labels`` (when the split has labels);
``[N]`` tensors per example, ``[C, N]`` for multiple choice.

Inputs longer than ``max_length`` are truncated (pairs: longest-first); how many were is counted
(``num_truncated``, ``truncated_fraction``) so reports can say what truncation cost.
"""
from __future__ import annotations

from typing import Any

import torch

from .._quiet import quiet_transformers
from .race import question_with_option
from .registry import canonical_name, get_task
from .types import DataError, MultipleChoiceDataset, TextDataset

__all__ = ["TokenizedDataset", "tokenize_dataset"]


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised examples. With ``padding="max_length"`` (default) every field is one stacked
    tensor (``[E, N]`` or ``[E, C, N]``); otherwise lists of per-example tensors (use a padding
    collator, e.g. ``DataCollatorWithPadding``)."""

    def __init__(self, features: dict[str, Any], *, task: str, problem: str, max_length: int,
                 truncated: list[bool], label_names=None, split=None, ids=None):
        self.features = features
        self.task = task
        self.problem = problem
        self.max_length = max_length
        self.truncated = truncated  # per example: did truncation drop tokens (multiple choice: any choice)
        self.num_truncated = sum(truncated)
        self.label_names = label_names
        self.split = split
        self.ids = ids

    def __len__(self) -> int:
        return len(self.features["input_ids"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.features.items()}

    @property
    def num_examples(self) -> int:
        return len(self)

    @property
    def truncated_fraction(self) -> float:
        return self.num_truncated / len(self) if len(self) else 0.0

    @property
    def has_labels(self) -> bool:
        return "labels" in self.features

    def truncation_report(self) -> dict:
        return {"task": self.task, "split": self.split, "examples": len(self), "max_length": self.max_length,
                "truncated": self.num_truncated, "truncated_fraction": round(self.truncated_fraction, 4)}

    @property
    def lengths(self) -> list[int]:
        """Tokens kept per example (non-padding; multiple choice: the longest choice)."""
        mask = self.features["attention_mask"]
        if isinstance(mask, list):
            return [int(m.sum(-1).max()) for m in mask]
        return mask.sum(-1).reshape(len(self), -1).max(-1).values.tolist()

    def __repr__(self) -> str:
        return (f"TokenizedDataset(task={self.task!r}, split={self.split!r}, examples={len(self)}, "
                f"max_length={self.max_length}, truncated={self.num_truncated})")


def _encode(tokenizer, first, second, max_length, padding):
    """Encoded features and, per row, whether truncation dropped tokens: from the fast
    tokenizer's ``Encoding.overflowing`` (one pass), else by re-tokenising without truncation.
    Long rows are truncated on purpose (and counted): transformers' warning about them is
    silenced for the call."""
    with quiet_transformers():
        return _encode_rows(tokenizer, first, second, max_length, padding)


def _encode_rows(tokenizer, first, second, max_length, padding):
    enc = tokenizer(first, second, truncation="longest_first" if second is not None else True,
                    max_length=max_length, padding="max_length" if padding == "max_length" else False,
                    return_attention_mask=True)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    encodings = getattr(enc, "encodings", None)
    if encodings is not None and len(encodings) == len(first):
        truncated = [len(e.overflowing) > 0 for e in encodings]
    else:  # slow tokenizer: count untruncated lengths
        full = tokenizer(first, second, truncation=False, padding=False, return_attention_mask=False,
                         return_token_type_ids=False, verbose=False)
        truncated = [len(ids) > max_length for ids in full["input_ids"]]
    return {k: enc[k] for k in keys}, truncated


def tokenize_dataset(dataset, tokenizer, max_length: int | None = None, padding: str | bool = "max_length",
                     batch_size: int = 2048) -> TokenizedDataset:
    """Tokenise ``dataset`` with a Hugging Face ``tokenizer`` to at most ``max_length`` tokens.

    ``max_length`` defaults to the task's paper value (SPEC 1.4) when known, else
    ``min(tokenizer.model_max_length, 512)``. ``padding="max_length"`` pads every example to
    ``max_length`` (PoWER-BERT's fixed N); ``padding=False`` leaves them ragged.
    Multiple choice: segment one is the context, segment two the question with the option
    (cloze "_" filled in), giving ``[C, N]`` per example.
    """
    if max_length is None:
        name = canonical_name(getattr(dataset, "task", "") or "")
        max_length = get_task(name).max_length if name else None
        if max_length is None:
            max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    if max_length < 4:
        raise DataError(f"max_length must be at least 4 tokens, got {max_length}")
    if padding not in ("max_length", False, None, "longest", True, "do_not_pad"):
        raise ValueError(f"padding must be 'max_length' or False, got {padding!r}")
    padding = "max_length" if padding == "max_length" else False

    if isinstance(dataset, MultipleChoiceDataset):
        return _tokenize_mc(dataset, tokenizer, max_length, padding, batch_size)
    if not isinstance(dataset, TextDataset):
        raise TypeError(f"tokenize_dataset takes a TextDataset or MultipleChoiceDataset, got {type(dataset).__name__}")

    columns: dict[str, list] = {}
    truncated: list[bool] = []
    n = len(dataset)
    for start in range(0, n, batch_size):
        first = dataset.texts[start:start + batch_size]
        second = dataset.text_pairs[start:start + batch_size] if dataset.text_pairs is not None else None
        feats, flags = _encode(tokenizer, first, second, max_length, padding)
        truncated += flags
        for k, v in feats.items():
            columns.setdefault(k, []).extend(v)
    features = _to_tensors(columns, padding)
    if dataset.labels is not None:
        dtype = torch.float32 if dataset.is_regression else torch.long
        features["labels"] = torch.tensor(dataset.labels, dtype=dtype)
    return TokenizedDataset(features, task=dataset.task, problem=dataset.problem, max_length=max_length,
                            truncated=truncated, label_names=dataset.label_names, split=dataset.split,
                            ids=dataset.ids)


def _tokenize_mc(dataset: MultipleChoiceDataset, tokenizer, max_length, padding, batch_size) -> TokenizedDataset:
    c = dataset.num_choices
    per_batch = max(1, batch_size // max(c, 1))
    columns: dict[str, list] = {}
    truncated: list[bool] = []
    for start in range(0, len(dataset), per_batch):
        stop = min(start + per_batch, len(dataset))
        first, second = [], []
        for i in range(start, stop):
            for option in dataset.options[i]:
                first.append(dataset.contexts[i])
                second.append(question_with_option(dataset.questions[i], option))
        feats, flags = _encode(tokenizer, first, second, max_length, padding)
        truncated += [any(flags[j:j + c]) for j in range(0, len(flags), c)]
        for k, v in feats.items():
            columns.setdefault(k, []).extend(v[j:j + c] for j in range(0, len(v), c))
    if padding == "max_length":
        features = {k: torch.tensor(v, dtype=torch.long) for k, v in columns.items()}
    else:  # ragged: pad the C choices of one example to their longest; across examples a collator pads
        features = {}
        for k, v in columns.items():
            features[k] = [torch.nn.utils.rnn.pad_sequence([torch.tensor(x, dtype=torch.long) for x in ex],
                                                           batch_first=True) for ex in v]
    if dataset.labels is not None:
        features["labels"] = torch.tensor(dataset.labels, dtype=torch.long)
    return TokenizedDataset(features, task=dataset.task, problem="multiple_choice", max_length=max_length,
                            truncated=truncated, label_names=dataset.label_names, split=dataset.split, ids=dataset.ids)


def _to_tensors(columns: dict[str, list], padding) -> dict[str, Any]:
    if padding == "max_length":
        return {k: torch.tensor(v, dtype=torch.long) for k, v in columns.items()}
    return {k: [torch.tensor(x, dtype=torch.long) for x in v] for k, v in columns.items()}
