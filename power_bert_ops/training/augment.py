"""Stage 3's training rows with word-dropped copies: each training example plus ``copies``
versions of it with each word left out with probability ``drop``. The fine-tuned teacher's
logits are distilled on every row, so a copy teaches how the teacher reads a shortened text; the
copies keep the example's label.

A copy is drawn afresh each epoch from ``(seed, epoch, index)``: the same run draws the same
copies, and a run resumed at an epoch's checkpoint draws what the uninterrupted run would have.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from transformers import TrainerCallback

__all__ = ["WordDropCopies", "SetCopiesEpoch", "word_starts", "drop_words"]


def word_starts(tokenizer) -> np.ndarray:
    """For each vocabulary id, whether the token starts a word: WordPiece marks continuations
    with ``##``; SentencePiece (``▁``) and byte-level BPE (``Ġ``) mark starts. A vocabulary with
    neither mark counts every token as a word."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    vocab = ["" if t is None else t for t in vocab]
    if any(t.startswith("##") for t in vocab):
        return np.array([not t.startswith("##") for t in vocab])
    for mark in ("▁", "Ġ"):
        if sum(t.startswith(mark) for t in vocab) > len(vocab) // 10:
            return np.array([t.startswith(mark) for t in vocab])
    return np.ones(len(vocab), dtype=bool)


def drop_words(example: dict, starts: np.ndarray, special: set, drop: float, rng: np.random.Generator) -> dict:
    """``example`` without some of its words: each word (a starting token and the continuations
    after it) is left out with probability ``drop``, at least one word stays, special tokens
    stay. Every per-token field (``input_ids``, ``attention_mask``, ``token_type_ids``, ...) loses
    the same positions; other fields are kept.

    Args:
        example: one tokenized row, its per-token fields as lists or 1-D tensors of length n.
        starts: [vocab] bool, :func:`word_starts`.
        special: the tokenizer's special ids.
        drop: probability of leaving out each word, in [0, 1).
        rng: the draw's generator.
    Returns:
        the shortened row (a new dict; ``example`` is not changed).
    """
    ids = example["input_ids"]
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    n = len(ids)
    word = np.full(n, -1)  # word index per position; -1: a special token
    w = -1
    for pos, t in enumerate(ids):
        if t in special:
            continue
        if w < 0 or (t < len(starts) and starts[t]):
            w += 1
        word[pos] = w
    words = w + 1
    if words < 2:
        return dict(example)
    gone = rng.random(words) < drop
    if gone.all():
        gone[rng.integers(words)] = False
    keep = [pos for pos in range(n) if word[pos] < 0 or not gone[word[pos]]]

    def cut(v):
        if isinstance(v, torch.Tensor) and v.dim() == 1 and len(v) == n:
            return v[torch.tensor(keep, dtype=torch.long)]
        if isinstance(v, (list, tuple)) and len(v) == n:
            return [v[pos] for pos in keep]
        return v

    return {k: cut(v) for k, v in example.items()}


class WordDropCopies(torch.utils.data.Dataset):
    """``base`` followed by ``copies`` word-dropped versions of each of its rows: row ``i`` of
    copy ``c`` (index ``(c + 1)·len(base) + i``) is :func:`drop_words` of ``base[i]`` drawn from
    ``(seed, epoch, index)``; :class:`SetCopiesEpoch` sets the epoch.

    Args:
        base: the tokenized training rows (a datasets.Dataset or a list of dicts).
        tokenizer: the rows' tokenizer (word starts and special ids).
        copies: copies of each row, >= 1.
        drop: probability of leaving out each word, in (0, 1).
        seed: the run's seed.
    """

    def __init__(self, base, tokenizer, copies: int, drop: float, seed: int):
        self.base, self.copies, self.drop, self.seed = base, copies, drop, seed
        self.starts = word_starts(tokenizer)
        self.special = set(tokenizer.all_special_ids)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base) * (self.copies + 1)

    def __getitem__(self, index: int) -> dict:
        n = len(self.base)
        if not 0 <= index < len(self):
            raise IndexError(f"WordDropCopies: index {index} out of range for {len(self)} rows")
        row = dict(self.base[index % n])
        if index < n:
            return row
        return drop_words(row, self.starts, self.special, self.drop,
                          np.random.default_rng((self.seed, self.epoch, index)))


class SetCopiesEpoch(TrainerCallback):
    """Gives a :class:`WordDropCopies` the Trainer's epoch when each epoch begins."""

    def __init__(self, dataset: WordDropCopies):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = math.floor(state.epoch + 1e-6)
