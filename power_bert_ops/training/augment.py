"""Stage 3's training rows with word-dropped copies: each training example plus ``copies``
versions of it with each word left out with probability ``drop``. A copy keeps its example's
label, and whatever stage 3 distils from the fine-tuned model (its logits on short texts, its
ranking on long ones) is distilled on the copy too, so a copy teaches how the teacher reads a
shortened text.

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
    after it) is left out with probability ``drop``; at least one word of each segment (a text,
    or each text of a pair: the words between two special tokens) stays, and special tokens stay.
    Every per-token field (``input_ids``, ``attention_mask``, ``token_type_ids``, ...) loses the
    same positions; other fields are kept.

    Args:
        example: one tokenized row, its per-token fields as lists, 1-D tensors or 1-D arrays of
            length n.
        starts: [vocab] bool, :func:`word_starts`.
        special: the ids that are never dropped and that separate segments (the tokenizer's
            special ids other than the unknown token's).
        drop: probability of leaving out each word, in [0, 1).
        rng: the draw's generator.
    Returns:
        the shortened row (a new dict; ``example`` is not changed).
    """
    ids = example["input_ids"]
    ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else list(ids)
    n = len(ids)
    word = np.full(n, -1)  # word index per position; -1: a special token
    segment = []  # segment of each word
    w, seg, after_special = -1, -1, True
    for pos, t in enumerate(ids):
        if t in special:
            after_special = True
            continue
        if after_special:
            seg += 1
        if after_special or (t < len(starts) and starts[t]):
            w += 1
            segment.append(seg)
        after_special = False
        word[pos] = w
    words = w + 1
    segment = np.array(segment)
    gone = rng.random(words) < drop
    for sg in range(seg + 1):
        mine = np.flatnonzero(segment == sg)
        if gone[mine].all():
            gone[mine[rng.integers(len(mine))]] = False
    if not gone.any():
        return dict(example)
    keep = [pos for pos in range(n) if word[pos] < 0 or not gone[word[pos]]]

    def cut(v):
        if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim == 1 and len(v) == n:
            return v[torch.tensor(keep, dtype=torch.long)] if isinstance(v, torch.Tensor) else v[keep]
        if isinstance(v, (list, tuple)) and len(v) == n:
            return [v[pos] for pos in keep]
        if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim > 0:
            raise TypeError(f"drop_words: field of shape {tuple(v.shape)} in a row of {n} tokens; per-token fields "
                            f"are 1-D")
        return v

    return {k: cut(v) for k, v in example.items()}


class WordDropCopies(torch.utils.data.Dataset):
    """``base`` followed by ``copies`` word-dropped versions of each of its rows: row ``i`` of
    copy ``c`` (index ``(c + 1)·len(base) + i``) is :func:`drop_words` of ``base[i]`` drawn from
    ``(seed, epoch, index)``; :class:`SetCopiesEpoch` sets the epoch.

    Args:
        base: the tokenized training rows, any map-style dataset of dicts (the pipeline's
            TokenizedDataset, a list of dicts).
        tokenizer: the rows' tokenizer (word starts and special ids).
        copies: copies of each row, >= 1.
        drop: probability of leaving out each word, in (0, 1).
        seed: the run's seed.
    """

    def __init__(self, base, tokenizer, copies: int, drop: float, seed: int):
        self.base, self.copies, self.drop, self.seed = base, copies, drop, seed
        self.starts = word_starts(tokenizer)
        self.special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
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
